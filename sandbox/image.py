"""The sandbox image: is there an engine, is the image built, build it."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

from ragcoder.sandbox.settings import DEFAULT_IMAGE

from ragcoder.errors import EngineUnavailable, SandboxError


def scripts_dir() -> Path:
    return Path(str(resources.files("ragcoder.sandbox").joinpath("scripts")))


def engine_available(timeout_s: float = 5.0) -> bool:
    """True when a Docker engine answers a ping."""
    try:
        from ragcoder.sandbox.docker_sandbox import docker_client

        docker_client(timeout_s).close()
    except EngineUnavailable:
        return False
    return True


def image_exists(tag: str = DEFAULT_IMAGE) -> bool:
    """True when the engine answers and has ``tag``."""
    try:
        from docker.errors import ImageNotFound
        from ragcoder.sandbox.docker_sandbox import docker_client

        client = docker_client()
    except EngineUnavailable:
        return False
    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False
    finally:
        client.close()


def build_image(tag: str = DEFAULT_IMAGE, force: bool = False) -> None:
    """Build ``tag`` with sandbox/scripts/build_image.sh (Dockerfile when a registry answers, else
    debootstrap). Progress goes to stderr; a failure raises SandboxError with the script's words."""
    script = scripts_dir() / "build_image.sh"
    argv = ["bash", str(script), *(["--force"] if force else []), tag]
    proc = subprocess.run(argv, check=False)  # progress lines go straight to the user's stderr
    if proc.returncode != 0:
        raise SandboxError(
            f"building {tag} failed (exit {proc.returncode}; see the lines above)",
            hint="start Docker first (sandbox/scripts/ensure_docker.sh as root), then retry",
        )
