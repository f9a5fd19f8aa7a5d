"""The sandbox protocol: ``Sandbox.run(code) -> ExecResult`` and ``run_tests(code, tests) -> TestReport``.

Errors raised by the *user's code* are data (``ExecResult.error``); failures of the *sandbox*
are exceptions from :mod:`ragcoder.errors`. Backends implement only :meth:`Sandbox.run` and
:meth:`Sandbox.close`; :meth:`Sandbox.run_tests` has a default built on ``run`` (the judge as an
ordinary program, see :mod:`ragcoder.sandbox.harness`), which the server backends replace with
their native test runs.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from ragcoder.sandbox.harness import parse_standalone, standalone_job

# The result types live in results.py (harness.py builds them too); re-exported for callers.
from ragcoder.sandbox.results import ErrorInfo as ErrorInfo
from ragcoder.sandbox.results import ExecResult as ExecResult
from ragcoder.sandbox.results import TestOutcome as TestOutcome
from ragcoder.sandbox.results import TestReport as TestReport

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_OUTPUT_LIMIT = 64 * 1024  # bytes kept of stdout and of stderr, each
TRUNCATION_MARKER = "\n... [output truncated: {dropped} more bytes] ...\n"


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
        """Load ``code``, then run each test case in ``tests`` against it; one outcome per case.

        ``tests`` is Python source (or a list of snippets): each top-level ``assert`` is a case,
        each ``def test_*`` function is a case, and a ``def check(candidate)`` is called with
        ``entry_point`` when one is given (HumanEval style). Other statements are setup. The
        tests run in a process of their own that looks up the code's names in the process that
        loaded it; the code under test cannot reach the verdicts.
        ``files`` are written into ``/work`` first, as for ``run``.
        """
        program, stdin, secret = standalone_job(code, tests, entry_point)
        result = self.run(program, stdin=stdin, files=files, timeout=timeout)
        return parse_standalone(result, secret)

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
