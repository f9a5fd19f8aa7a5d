"""The sandbox protocol: ``Sandbox.run(code) -> ExecResult`` and ``run_tests(code, tests) -> TestReport``.

Errors raised by the *user's code* are data (``ExecResult.error``); failures of the *sandbox*
are exceptions from :mod:`ragcoder.errors`. Backends implement only :meth:`Sandbox.run` and
:meth:`Sandbox.close`; :meth:`Sandbox.run_tests` is shared and built on ``run``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ragcoder.sandbox.harness import build_test_program, parse_test_report

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_OUTPUT_LIMIT = 64 * 1024  # bytes kept of stdout and of stderr, each
TRUNCATION_MARKER = "\n... [output truncated: {dropped} more bytes] ...\n"


@dataclass(frozen=True)
class ErrorInfo:
    """An exception raised by the user's code."""

    name: str  # e.g. "ZeroDivisionError"
    value: str  # str(exc)
    traceback: str  # trimmed to the user's frames

    def summary(self) -> str:
        return f"{self.name}: {self.value}" if self.value else self.name


@dataclass(frozen=True)
class ExecResult:
    """What happened when one program ran."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = 0
    error: ErrorInfo | None = None
    timed_out: bool = False
    oom_killed: bool = False
    duration_ms: float = 0.0
    files: Mapping[str, bytes] = field(default_factory=dict)  # files written under /work (see settings caps)
    files_skipped: Mapping[str, int] = field(default_factory=dict)  # name -> size of files over a cap
    # one line when the run failed for want of a package this sandbox lacks ("needs numpy; build
    # the scientific image with ..."); set by the image router (sandbox/routing.py), else ''
    missing: str = ""

    @property
    def ok(self) -> bool:
        """True when the program ran to completion without an error."""
        return self.error is None and not self.timed_out and not self.oom_killed and self.exit_code == 0

    def failure_summary(self) -> str:
        """One line saying why the run failed ('' when it did not)."""
        if self.timed_out:
            return "timed out"
        if self.oom_killed:
            return "killed: out of memory"
        if self.error is not None:
            return self.error.summary()
        if self.exit_code not in (0, None):
            return f"exited with code {self.exit_code}"
        return ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = sorted(self.files)
        return d


@dataclass(frozen=True)
class TestOutcome:
    """One test case: a top-level assert, a ``test_*`` function, or ``check(entry_point)``."""

    __test__ = False  # not a pytest class

    name: str  # the assert's source, or the function name
    passed: bool
    message: str = ""  # for failures: what went wrong, with actual values where known


@dataclass(frozen=True)
class TestReport:
    """The outcome of running code against tests."""

    __test__ = False

    passed: bool
    outcomes: tuple[TestOutcome, ...]
    result: ExecResult  # the underlying run (stdout without the report line)
    error: ErrorInfo | None = None  # the code itself failed to load (before any test ran)

    @property
    def failed(self) -> tuple[TestOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.passed)

    def summary(self) -> str:
        n = len(self.outcomes)
        ok = sum(o.passed for o in self.outcomes)
        if self.error is not None:
            return f"code failed before the tests ran: {self.error.summary()}"
        if self.result.timed_out or self.result.oom_killed:
            return f"{self.result.failure_summary()} ({ok}/{n} tests passed before that)"
        return f"{ok}/{n} tests passed"


class Sandbox(abc.ABC):
    """Runs untrusted Python code in isolation. Use as a context manager; close() is idempotent."""

    #: short backend name shown to users ("docker", "local", "unsafe-local")
    name: str = "sandbox"

    @abc.abstractmethod
    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run ``code`` as a fresh ``__main__`` in ``/work`` and return what happened."""

    def run_tests(
        self,
        code: str,
        tests: str | Sequence[str],
        *,
        entry_point: str | None = None,
        timeout: float | None = None,
        files: Mapping[str, bytes | str] | None = None,
    ) -> TestReport:
        """Run ``code`` then each test case in ``tests`` in the same namespace.

        ``tests`` is Python source (or a list of snippets): each top-level ``assert`` is a case,
        each ``def test_*`` function is a case, and a ``def check(candidate)`` is called with
        ``entry_point`` when one is given (HumanEval style). Other statements are setup.
        ``files`` are written into ``/work`` first, as for ``run``.
        """
        program, nonce = build_test_program(code, tests, entry_point=entry_point)
        result = self.run(program, files=files, timeout=timeout)
        return parse_test_report(result, nonce)

    def close(self) -> None:  # noqa: B027 - backends without resources need nothing here
        """Release every resource. Safe to call more than once."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate(text: str, limit: int = DEFAULT_OUTPUT_LIMIT) -> str:
    """Keep the first ``limit`` bytes of ``text`` with a visible marker saying how much was cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", "ignore")
    return kept + TRUNCATION_MARKER.format(dropped=len(data) - limit)
