"""Fixtures for the agent's real-terminal tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random llama (2 layers) with the SmolLM2 tokenizer, for UI tests that need *a* model."""
    from chains.llm import make_tiny_random_model

    return make_tiny_random_model(tmp_path_factory.mktemp("tiny-llama") / "model")
