"""What the model is told after a failed run: the error, its traceback, and the failing tests.

Stack traces are never swallowed (a known pitfall that makes repair worse): the trimmed
traceback, pointing at the user's lines, goes back to the model with the failing assertions
and their actual values. A repair is told only about the hard checks (the user's tests or the
instruction's examples): the model's own tests may be wrong, and a repair that chases them can
break code that was right.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ragcoder.sandbox import ExecResult, TestReport

if TYPE_CHECKING:
    from ragcoder.agent.result import Attempt

MAX_FAILED_TESTS = 5
MAX_OUTPUT_CHARS = 1500


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def feedback_for_run(result: ExecResult) -> str:
    """Feedback for a program checked only by running it."""
    lines: list[str] = []
    if result.timed_out:
        lines.append("The program did not finish in time (infinite loop or far too slow).")
    elif result.oom_killed:
        lines.append("The program was killed for using too much memory.")
    if result.error is not None:
        lines.append(f"It raised {result.error.summary()}")
        lines.append(_tail(result.error.traceback, MAX_OUTPUT_CHARS))
    elif result.exit_code not in (0, None) and not (result.timed_out or result.oom_killed):
        lines.append(f"It exited with code {result.exit_code}.")
        if result.stderr.strip():
            lines.append("stderr:\n" + _tail(result.stderr, MAX_OUTPUT_CHARS))
    if result.stdout.strip():
        lines.append("Its output was:\n" + _tail(result.stdout, 600))
    return "\n".join(lines) or "The program failed."


def feedback_for_tests(report: TestReport) -> str:
    """Feedback for a program checked against tests."""
    if report.error is not None:
        return f"Loading the code raised {report.error.summary()}\n" + _tail(
            report.error.traceback, MAX_OUTPUT_CHARS
        )
    if not report.outcomes:
        return feedback_for_run(report.result)
    lines = [f"{report.summary()}."]
    failed = list(dict.fromkeys((o.name, o.message) for o in report.failed))  # each distinct failure once
    for name, message in failed[:MAX_FAILED_TESTS]:
        lines.append(f"FAILED: {name}\n  {message}")
    extra = len(failed) - MAX_FAILED_TESTS
    if extra > 0:
        lines.append(f"... and {extra} more failing tests.")
    if report.result.timed_out or report.result.oom_killed:
        lines.append(feedback_for_run(report.result))
    return "\n".join(lines)


def feedback_for_candidate(candidate: Attempt, hard: set[str]) -> str:
    """What a repair of ``candidate`` is told: its failing hard tests (expected and actual values),
    or why it did not run. ``hard`` names the user's tests or the instruction's examples."""
    report = candidate.report
    if report is None or report.error is not None:
        return feedback_for_run(candidate.result) if report is None else feedback_for_tests(report)
    generated = {name for name in candidate.statuses if name not in hard}
    shown = tuple(o for o in report.outcomes if o.name not in generated)
    if not shown and report.result.ok:
        return "The code ran, but it did not finish its checks."
    return feedback_for_tests(replace(report, outcomes=shown, result=candidate.result))
