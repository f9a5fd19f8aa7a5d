"""Test runs, host side: the job sent to the judge, and the TestReport built from its verdicts.

The judge (``server/judge.py``) runs each test case in a process that never runs user code and
evaluates it against the code under test, which lives in another process and only answers
calls. Verdicts travel on a channel that process never holds: the server backends read them from
the judge's own pipe (``Sandbox.run_tests`` in :mod:`ragcoder.sandbox.pool`); any other
:class:`~ragcoder.sandbox.base.Sandbox` runs the judge as an ordinary program
(:func:`standalone_job`) whose verdict lines carry a secret the judge reads from stdin only after
it has forked the code's process. Nothing the code under test can read authenticates a verdict.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ragcoder.sandbox.results import ErrorInfo, ExecResult, TestOutcome, TestReport

_TRACEBACK_RE = re.compile(r"^Traceback \(most recent call last\):\n", re.M)
_MAX_TRACEBACK_CHARS = 4000
_MAX_OUTCOMES = 10_000


def test_list(tests: str | Sequence[str]) -> list[str]:
    """Tests as the judge takes them: a list of source snippets."""
    listed = [tests] if isinstance(tests, str) else list(tests)
    for item in listed:
        if not isinstance(item, str):
            raise TypeError(f"tests must be Python source strings, got {type(item).__name__}")
    return listed


def standalone_job(code: str, tests: str | Sequence[str], entry_point: str | None) -> tuple[str, str, bytes]:
    """(program, stdin, secret) for running the judge as ordinary code (see the module doc)."""
    from ragcoder.sandbox.workers import judge_program

    secret = "@@ragcoder-verdict-" + secrets.token_hex(16) + "@@"
    job = json.dumps({"code": code, "tests": test_list(tests), "entry_point": entry_point})
    return judge_program(), f"{len(job)}\n{job}{secret}\n", secret.encode()


def parse_standalone(result: ExecResult, secret: bytes) -> TestReport:
    """The TestReport from a standalone judge's run: verdict lines are those after the secret."""
    marker = secret.decode()
    verdict: dict[str, Any] = {"outcomes": [], "load_error": None, "done": False}
    kept = []
    for line in result.stdout.split("\n"):
        at = line.find(marker)
        if at < 0:
            kept.append(line)
            continue
        if line[:at]:
            kept.append(line[:at])
        try:
            msg = json.loads(line[at + len(marker) :])
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        kind = msg.get("kind")
        if kind == "outcome":
            verdict["outcomes"].append(msg)
        elif kind == "load_error":
            verdict["load_error"] = msg
        elif kind == "done":
            verdict["done"] = True
    stdout = "\n".join(kept)
    return report_from_verdict(replace(result, stdout=stdout), verdict)


def clean_text(text: str) -> str:
    """``text`` as valid UTF-8 (a lone surrogate from the run becomes U+FFFD): results are written
    to JSON files and terminals later, where such a character breaks the writer."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


# Names only the host gives an error: a run that raises (or prints) one gets it qualified, so
# "the sandbox crashed" can never be claimed by the code under test.
HOST_ONLY_ERRORS = frozenset({"SandboxCrashed", "SandboxError", "SandboxClosed"})


def user_error(name: str, value: str, traceback: str) -> ErrorInfo:
    """An error of the user's code, with host-only names qualified as ``__main__.<name>``."""
    name = clean_text(name)
    if name in HOST_ONLY_ERRORS:
        name = "__main__." + name
    return ErrorInfo(name=name[:200], value=clean_text(value), traceback=clean_text(traceback))


def _text(value: object, limit: int) -> str:
    return clean_text(value[:limit]) if isinstance(value, str) else ""


def report_from_verdict(result: ExecResult, verdict: Mapping[str, Any] | None) -> TestReport:
    """The TestReport of a test run. The run passed only when the judge said ``done``, every case
    passed, there was at least one, and the run ended cleanly. Malformed verdicts count as none."""
    if not isinstance(verdict, Mapping):
        err = result.error or error_from_stderr(result.stderr)
        return TestReport(passed=False, outcomes=(), result=result, error=err)
    raw = verdict.get("outcomes")
    outcomes = tuple(
        TestOutcome(
            name=_text(o.get("name"), 2000),
            passed=o.get("passed") is True,
            message=_text(o.get("message"), 2000),
        )
        for o in (raw if isinstance(raw, list) else [])[:_MAX_OUTCOMES]
        if isinstance(o, Mapping)
    )
    load = verdict.get("load_error")
    if isinstance(load, Mapping):
        err = user_error(
            _text(load.get("name"), 200) or "Error",
            _text(load.get("value"), 2000),
            _text(load.get("traceback"), _MAX_TRACEBACK_CHARS),
        )
        return TestReport(passed=False, outcomes=outcomes, result=replace(result, error=err), error=err)
    done = verdict.get("done") is True
    ended_early = not done and not (result.timed_out or result.oom_killed)
    if verdict.get("overflow") is True:
        message = "the tests gave more verdicts than the run may report: split them into smaller runs"
        outcomes += (TestOutcome(name="(test run)", passed=False, message=message),)
        done = False
    elif ended_early:  # the judge was killed (or failed) before it said done: say so as a case
        how = f"exit code {result.exit_code}" if result.exit_code is not None else "no exit status"
        message = f"the test run ended before every case ran ({how})"
        outcomes += (TestOutcome(name="(test run)", passed=False, message=message),)
    passed = (
        done
        and bool(outcomes)
        and all(o.passed for o in outcomes)
        and result.exit_code == 0
        and not (result.timed_out or result.oom_killed)
    )
    return TestReport(passed=passed, outcomes=outcomes, result=result)


def error_from_stderr(stderr: str) -> ErrorInfo | None:
    """Read the last uncaught-exception traceback Python printed on stderr, if any."""
    matches = list(_TRACEBACK_RE.finditer(stderr))
    if not matches:
        return None
    text = stderr[matches[-1].start() :].rstrip()
    lines = text.splitlines()
    # The exception line is the last line that does not start with whitespace (skip notes).
    last = next((ln for ln in reversed(lines) if ln and not ln.startswith((" ", "\t"))), "")
    name, _, value = last.partition(":")
    name = name.strip() or "Error"
    if " " in name:  # not an exception line (e.g. output mixed in): keep the whole line
        name, value = "Error", last
    return ErrorInfo(
        name=name.rsplit(".", 1)[-1], value=value.strip(), traceback=text[-_MAX_TRACEBACK_CHARS:]
    )
