"""open_sandbox: pick and open a backend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from ragcoder.sandbox.base import Sandbox
from ragcoder.sandbox.settings import DEFAULT_IMAGE

from ragcoder.errors import ConfigError, EngineUnavailable, ImageMissing, SandboxError

log = logging.getLogger(__name__)
SandboxKind = Literal["auto", "docker", "local", "unsafe-local"]
KINDS: tuple[str, ...] = ("auto", "docker", "local", "unsafe-local")


def auto_backend(image: str = DEFAULT_IMAGE) -> tuple[str, str]:
    """(kind, reason) that ``open_sandbox("auto")`` would pick, without starting anything."""
    from ragcoder.sandbox.image import engine_available, image_exists
    from ragcoder.sandbox.local_sandbox import bwrap_path

    if engine_available():
        if image_exists(image):
            return "docker", "Docker engine answers and the image is built"
        reason = f"Docker engine answers but {image} is not built (ragcoder sandbox build-image)"
    else:
        reason = "no Docker engine answers"
    if bwrap_path() is not None:
        return "local", reason + "; using bubblewrap"
    return "none", reason + "; bubblewrap is not installed either"


def open_sandbox(kind: str = "auto", *, hosts: Sequence[str] = (), **settings: Any) -> Sandbox:
    """Open a sandbox. ``kind``: "auto" (Docker when the engine answers and the image exists, else
    the local bubblewrap backend with a warning), "docker", "local", or "unsafe-local" (plain
    subprocess: only when asked for explicitly). ``settings`` are SandboxSettings fields.
    ``hosts`` (Docker engine URLs) spreads the docker backend over them (sandbox/multi_host.py)."""
    if kind not in KINDS:
        raise ValueError(f"unknown sandbox kind {kind!r}; choose one of {', '.join(KINDS)}")
    if hosts:
        if kind not in ("auto", "docker"):
            raise ConfigError(f"docker_hosts are engines for the docker sandbox, not for sandbox = {kind!r}")
        from ragcoder.sandbox.multi_host import MultiHostSandbox

        return MultiHostSandbox(hosts, **settings)
    if kind == "docker":
        from ragcoder.sandbox.docker_sandbox import DockerSandbox

        return DockerSandbox(**settings)
    if kind == "local":
        from ragcoder.sandbox.local_sandbox import LocalSandbox

        return LocalSandbox(**settings)
    if kind == "unsafe-local":
        from ragcoder.sandbox.local_sandbox import UnsafeLocalSandbox

        return UnsafeLocalSandbox(**settings)
    from ragcoder.sandbox.docker_sandbox import DockerSandbox
    from ragcoder.sandbox.local_sandbox import BackendUnavailable, LocalSandbox

    try:
        return DockerSandbox(**settings)
    except (EngineUnavailable, ImageMissing) as exc:
        docker_problem = exc
    try:
        return LocalSandbox(because=f"Docker is not usable ({docker_problem})", **settings)
    except BackendUnavailable as exc:
        raise SandboxError(
            f"no sandbox backend: {docker_problem}; and {exc}",
            hint=f"{docker_problem.hint}; or install bubblewrap; or pass --sandbox unsafe-local (no isolation)",
        ) from exc
