"""What the model is told after a failed run: the error, its traceback, and the failing tests.

Stack traces are never swallowed (a known pitfall that makes repair worse): the trimmed
traceback, pointing at the user's lines, goes back to the model with the failing assertions
and their actual values.
"""

from __future__ import annotations

from ragcoder.sandbox import ExecResult, TestReport

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
    for outcome in report.failed[:MAX_FAILED_TESTS]:
        lines.append(f"FAILED: {outcome.name}\n  {outcome.message}")
    extra = len(report.failed) - MAX_FAILED_TESTS
    if extra > 0:
        lines.append(f"... and {extra} more failing tests.")
    if report.result.timed_out or report.result.oom_killed:
        lines.append(feedback_for_run(report.result))
    return "\n".join(lines)
