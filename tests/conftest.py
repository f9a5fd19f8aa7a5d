"""Shared fixtures. Real-path fixtures (Docker, models) live beside the tests that need them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here: never try it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def trusted_sandbox() -> Iterator:
    """A plain-subprocess runner for code the TESTS wrote (scripted fakes), never model output."""
    from sandbox import open_sandbox

    with open_sandbox("unsafe-local") as sandbox:
        yield sandbox
