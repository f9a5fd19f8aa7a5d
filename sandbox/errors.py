"""Failures of the sandbox itself (never of the user's code, which are data in ExecResult.error).

Every exception carries a one-line message and a ``hint`` saying what to do; the CLI prints
``error: <message>`` and ``hint`` and exits non-zero.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: the sandbox could not run the code (not: the code failed)."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class EngineUnavailable(SandboxError):
    """No Docker engine answers."""

    hint = "start Docker (or run `sandbox/scripts/ensure_docker.sh` as root), or pass --sandbox local"


class ImageMissing(SandboxError):
    """The sandbox image is not built."""

    hint = "build it with `ragcoder sandbox build-image`"


class SandboxCrashed(SandboxError):
    """The container or its server died while running code (not a timeout or OOM of user code)."""


class SandboxClosed(SandboxError):
    """run() was called on a sandbox that was already closed."""
