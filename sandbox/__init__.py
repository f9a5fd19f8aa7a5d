"""Running untrusted code: the Sandbox protocol, its results, and the backends.

Open one with :func:`open_sandbox` ("auto", "docker", "local", "unsafe-local"), or an
:class:`ImageRouter` over it, which sends each run to the image that has its imports (what the
agent opens). Backends import docker/subprocess machinery lazily, so importing this package stays
instant.
"""

from ragcoder.sandbox.base import ErrorInfo, ExecResult, Sandbox, TestOutcome, TestReport
from ragcoder.sandbox.factory import KINDS, auto_backend, open_sandbox
from ragcoder.sandbox.routing import ImageRouter
from ragcoder.sandbox.session import Session
from ragcoder.sandbox.settings import SandboxSettings

from ragcoder.errors import EngineUnavailable, ImageMissing, SandboxClosed, SandboxCrashed, SandboxError

__all__ = [
    "KINDS",
    "EngineUnavailable",
    "ErrorInfo",
    "ExecResult",
    "ImageMissing",
    "ImageRouter",
    "Sandbox",
    "SandboxClosed",
    "SandboxCrashed",
    "SandboxError",
    "SandboxSettings",
    "Session",
    "TestOutcome",
    "TestReport",
    "auto_backend",
    "open_sandbox",
]
