"""The server's answers, checked and turned into results on the host.

The run server is our own code, but what it passes on (output, error frames, verdicts) was shaped
by the code under test, and a broken or hijacked channel must not become a verdict. So every
answer is checked field by field (type, size) before it becomes an :class:`ExecResult`; an answer
that does not check out breaks the worker (it is replaced) instead of becoming data.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ragcoder.sandbox.base import TRUNCATION_MARKER
from ragcoder.sandbox.harness import clean_text, error_from_stderr, user_error
from ragcoder.sandbox.results import ExecResult


class MalformedAnswer(Exception):
    """The server's answer does not have the shape the host expects."""


def _field(answer: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = answer.get(name)
    if isinstance(value, bool) and bool not in kinds:
        raise MalformedAnswer(f"answer field {name} has the wrong type")
    if not isinstance(value, kinds):
        raise MalformedAnswer(f"answer field {name} has the wrong type")
    return value


def _cap(text: str, total: int, limit: int) -> str:
    if total <= limit:
        return text
    return text + TRUNCATION_MARKER.format(dropped=total - limit)


def exec_result(answer: Any, output_limit: int) -> ExecResult:
    """The ExecResult of a run answer; MalformedAnswer when a field is missing or odd."""
    if not isinstance(answer, dict):
        raise MalformedAnswer("the answer is not an object")
    stdout = _field(answer, "stdout", (str,))
    stderr = _field(answer, "stderr", (str,))
    totals = [_field(answer, name, (int,)) for name in ("stdout_total", "stderr_total")]
    exit_code = _field(answer, "exit_code", (int, type(None)))
    timed_out = _field(answer, "timed_out", (bool,))
    oom_killed = _field(answer, "oom_killed", (bool,))
    duration_ms = float(_field(answer, "duration_ms", (int, float)))
    if len(stdout) > output_limit or len(stderr) > output_limit:  # chars <= bytes kept
        raise MalformedAnswer("an output is over its limit")
    raw_error = answer.get("error")
    error = None
    if raw_error is not None:
        if not isinstance(raw_error, dict) or not all(
            isinstance(raw_error.get(k), str) for k in ("name", "value", "traceback")
        ):
            raise MalformedAnswer("answer field error has the wrong shape")
        error = user_error(raw_error["name"], raw_error["value"][:4000], raw_error["traceback"][-4000:])
    elif exit_code not in (0, None) and not timed_out and not oom_killed:
        tail = answer.get("stderr_tail")
        found = error_from_stderr(tail if isinstance(tail, str) and tail else stderr)
        if found is not None:
            error = user_error(found.name, found.value, found.traceback)
    files_raw = answer.get("files", {})
    if not isinstance(files_raw, dict):
        raise MalformedAnswer("answer field files has the wrong type")
    try:
        files = {
            name: base64.b64decode(b64, validate=True)
            for name, b64 in files_raw.items()
            if isinstance(name, str) and isinstance(b64, str) and clean_text(name) == name
        }  # a file name that is not valid UTF-8 cannot be named faithfully here: left out
    except (binascii.Error, ValueError) as exc:
        raise MalformedAnswer("a returned file is not base64") from exc
    skipped_raw = answer.get("files_skipped", {})
    if not isinstance(skipped_raw, dict):
        raise MalformedAnswer("answer field files_skipped has the wrong type")
    files_skipped = {
        name: size
        for name, size in skipped_raw.items()
        if isinstance(name, str) and clean_text(name) == name and type(size) is int and size >= 0
    }
    return ExecResult(
        stdout=_cap(clean_text(stdout), totals[0], output_limit),
        stderr=_cap(clean_text(stderr), totals[1], output_limit),
        exit_code=exit_code,
        error=error,
        timed_out=timed_out,
        oom_killed=oom_killed,
        duration_ms=duration_ms,
        files=files,
        files_skipped=files_skipped,
    )
