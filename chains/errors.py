"""ragcoder's exceptions: a one-line message naming the problem plus a ``hint`` saying what to do.

The CLI turns them into a friendly one-line error (message, then the hint); library callers can
catch :class:`RagcoderError` for all of them.
"""

from __future__ import annotations


class RagcoderError(Exception):
    """Base class: ``str(err)`` is the one-line problem, ``err.hint`` what the user can do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def friendly(self) -> str:
        """Message and hint on one line, for the CLI edge."""
        return f"{self} ({self.hint})" if self.hint else str(self)


class UnknownModel(RagcoderError):
    """The model spec is neither a known name, a local folder, a .gguf file nor a cached HF id."""


class ModelNotInstalled(RagcoderError):
    """The model is known (or looks like a model) but its files are not on this machine."""


class ModelInstallError(RagcoderError):
    """Fetching, joining, verifying or converting a model failed; nothing half-written is left."""
