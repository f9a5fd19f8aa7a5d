"""The test harness program and its report parsing, run here with a plain interpreter.

Backend-independent: the same program runs in every sandbox; here it runs our own trusted code.
"""

from __future__ import annotations

import subprocess
import sys

from ragcoder.sandbox.base import ExecResult
from ragcoder.sandbox.harness import build_test_program, error_from_stderr, parse_test_report


def run_here(program: str) -> ExecResult:
    proc = subprocess.run([sys.executable, "-I", "-c", program], capture_output=True, text=True, timeout=30)
    return ExecResult(
        stdout=proc.stdout,
        stderr=proc.stderr,
        exit_code=proc.returncode,
        error=error_from_stderr(proc.stderr),
    )


def report_for(code: str, tests: str | list[str], entry_point: str | None = None):
    program, nonce = build_test_program(code, tests, entry_point=entry_point)
    return parse_test_report(run_here(program), nonce)


def test_each_assert_is_a_case_with_actual_values_on_failure() -> None:
    report = report_for(
        "def sq(x):\n    print('called', x)\n    return x * x if x != 3 else 10\n",
        "import math\nassert sq(2) == 4\nassert sq(3) == 9\nassert math.isclose(sq(1), 1)",
    )
    assert not report.passed
    assert [(o.name, o.passed) for o in report.outcomes] == [
        ("assert sq(2) == 4", True),
        ("assert sq(3) == 9", False),
        ("assert math.isclose(sq(1), 1)", True),
    ]
    assert report.failed[0].message == "got 10, expected 9"
    assert "called 2" in report.result.stdout and "@@ragcoder-report" not in report.result.stdout
    assert report.summary() == "2/3 tests passed"


def test_test_functions_and_humaneval_check() -> None:
    code = "def add(a, b):\n    return a + b\n"
    tests = "def test_small():\n    assert add(1, 1) == 2\n\ndef check(candidate):\n    assert candidate(2, 2) == 4\n"
    report = report_for(code, tests, entry_point="add")
    assert report.passed
    assert [o.name for o in report.outcomes] == ["test_small", "check(add)"]


def test_exception_in_a_test_is_reported_not_fatal() -> None:
    report = report_for("def f(x):\n    return 1 / x\n", ["assert f(0) == 0", "assert f(1) == 1"])
    assert [o.passed for o in report.outcomes] == [False, True]
    assert report.failed[0].message.startswith("raised ZeroDivisionError")


def test_code_that_fails_to_load_is_an_error_with_a_user_traceback() -> None:
    report = report_for("def f(:\n    pass\n", "assert f() is None")
    assert not report.passed and report.error is not None
    assert report.error.name == "SyntaxError"
    report = report_for("x = 1\nraise ValueError('boom')\n", "assert x == 1")
    assert report.error.name == "ValueError" and report.error.value == "boom"
    assert 'File "solution.py", line 2' in report.error.traceback
    assert "harness" not in report.error.traceback and "_main" not in report.error.traceback


def test_program_that_dies_before_reporting_fails_cleanly() -> None:
    report = report_for("import os\nos._exit(3)\n", "assert True")
    assert not report.passed and report.outcomes == ()


def test_no_tests_is_not_a_pass() -> None:
    assert not report_for("x = 1\n", "").passed


def test_error_from_stderr_reads_the_last_traceback() -> None:
    stderr = (
        'warming up\nTraceback (most recent call last):\n  File "main.py", line 3, in <module>\n'
        "    f()\nKeyError: 'k'\n"
    )
    err = error_from_stderr(stderr)
    assert err is not None and err.name == "KeyError" and err.value == "'k'"
    assert error_from_stderr("just a warning\n") is None


def test_plain_asserts_say_what_the_call_returned() -> None:
    report = report_for("def ok(s):\n    return s == 'x'\n", "assert ok('y')\nassert not ok('x')")
    assert [o.message for o in report.failed] == [
        "got False, expected a true value",
        "got True, expected a false value",
    ]
