"""Fixtures for the sandbox tests: one warm sandbox per backend, shared by the session.

Docker-backed tests skip (saying what to run) without an engine and image, and FAIL instead
when RAGCODER_REQUIRE_DOCKER=1 (CI). The local backend needs bubblewrap; likewise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from ragcoder.sandbox import Sandbox

BACKENDS = [
    pytest.param("docker", marks=pytest.mark.docker, id="docker"),
    pytest.param("local", id="local"),
]


def docker_problem() -> str | None:
    from ragcoder.sandbox.image import engine_available, image_exists
    from ragcoder.sandbox.settings import DEFAULT_IMAGE

    if not engine_available():
        return "no Docker engine answers: run `sudo sandbox/scripts/ensure_docker.sh` or start Docker"
    if not image_exists(DEFAULT_IMAGE):
        return f"the image {DEFAULT_IMAGE} is not built: run `ragcoder sandbox build-image`"
    return None


def require_docker() -> None:
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("RAGCODER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"Docker is required (RAGCODER_REQUIRE_DOCKER=1): {problem}")
    pytest.skip(problem)


def require_bwrap() -> None:
    from ragcoder.sandbox.local_sandbox import bwrap_path

    if bwrap_path() is None:
        if os.environ.get("RAGCODER_REQUIRE_DOCKER") == "1":
            pytest.fail("bubblewrap is required in CI: apt-get install bubblewrap")
        pytest.skip("bubblewrap is not installed: apt-get install bubblewrap")


def open_backend(kind: str, **settings: object) -> Sandbox:
    from ragcoder.sandbox import open_sandbox

    if kind == "docker":
        require_docker()
    elif kind == "local":
        require_bwrap()
    return open_sandbox(kind, **settings)


_SHARED: dict[str, Sandbox] = {}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A warm sandbox of each backend (opened once per session, shared by the tests)."""
    kind = request.param
    if kind not in _SHARED:
        _SHARED[kind] = open_backend(kind, pool_size=2, timeout_s=10.0, mem_limit="256m")
    yield _SHARED[kind]


@pytest.fixture(params=BACKENDS)
def solo(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A sandbox of each backend with ONE warm server: consecutive runs meet on the same worker
    (what a run leaves behind is what the next one would find)."""
    key = f"solo-{request.param}"
    if key not in _SHARED:
        _SHARED[key] = open_backend(request.param, pool_size=1, timeout_s=10.0, mem_limit="256m")
    yield _SHARED[key]


@pytest.fixture(scope="session", autouse=True)
def _close_shared() -> Iterator[None]:
    yield
    for sandbox in _SHARED.values():
        sandbox.close()
    _SHARED.clear()
