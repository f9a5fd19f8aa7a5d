"""What a sandbox run gives back: ``ExecResult`` (with the user's ``ErrorInfo``) and ``TestReport``.

Plain data, shared by the protocol (:mod:`ragcoder.sandbox.base`) and the test harness that
builds reports (:mod:`ragcoder.sandbox.harness`), so neither imports the other's module to get them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


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
