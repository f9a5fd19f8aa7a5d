"""Backend-independent pieces: turning tests into one program, and reading results back.

The test program runs inside the sandbox with the standard library only. It executes the
user's code as ``solution.py``, then each test case, and prints one report line on stdout,
prefixed by a random nonce, that :func:`parse_test_report` reads and removes.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import replace

from ragcoder.sandbox.results import ErrorInfo, ExecResult, TestOutcome, TestReport

_TRACEBACK_RE = re.compile(r"^Traceback \(most recent call last\):\n", re.M)
_MAX_TRACEBACK_CHARS = 4000

_PROGRAM = r'''
import ast as _ast, json as _json, sys as _sys, traceback as _tb
_NONCE = {nonce!r}
_CODE = {code!r}
_TESTS = {tests!r}
_ENTRY = {entry!r}
_HERE = _sys._getframe().f_code.co_filename


def _err(exc):
    frames = [f for f in _tb.extract_tb(exc.__traceback__) if f.filename != _HERE]
    text = "Traceback (most recent call last):\n" + "".join(_tb.format_list(frames))
    text += "".join(_tb.format_exception_only(type(exc), exc))
    return {{"name": type(exc).__name__, "value": str(exc), "traceback": text[-{max_tb}:]}}


def _assert_message(node, ns, exc):
    """For `assert a == b`, say what `a` really was: the single most useful repair hint."""
    if str(exc):
        return str(exc)
    test = node.test
    if isinstance(test, _ast.Compare) and len(test.ops) == 1:
        try:
            left = eval(compile(_ast.Expression(test.left), "<test>", "eval"), ns)
            right = eval(compile(_ast.Expression(test.comparators[0]), "<test>", "eval"), ns)
        except BaseException as e:  # evaluating again raised: report that instead
            return "raised " + type(e).__name__ + ": " + str(e)
        ops = {{"Eq": "", "NotEq": "!= ", "Lt": "< ", "LtE": "<= ", "Gt": "> ", "GtE": ">= ", "Is": "is ",
               "IsNot": "is not ", "In": "in ", "NotIn": "not in "}}
        op = ops.get(type(test.ops[0]).__name__, type(test.ops[0]).__name__ + " ")
        return "got " + repr(left)[:300] + ", expected " + op + repr(right)[:300]
    negated = isinstance(test, _ast.UnaryOp) and isinstance(test.op, _ast.Not)
    try:
        value = eval(compile(_ast.Expression(test.operand if negated else test), "<test>", "eval"), ns)
    except BaseException as e:
        return "raised " + type(e).__name__ + ": " + str(e)
    return "got " + repr(value)[:300] + ", expected a " + ("false" if negated else "true") + " value"


def _cases(src):
    tree = _ast.parse(src, "<tests>")
    for node in tree.body:
        seg = (_ast.get_source_segment(src, node) or _ast.unparse(node)).strip()
        if isinstance(node, _ast.Assert):
            yield "assert", node, seg
        elif isinstance(node, (_ast.FunctionDef, _ast.AsyncFunctionDef)) and node.name.startswith("test"):
            yield "setup", node, seg
            yield "func", node, node.name
        else:
            yield "setup", node, seg


def _main():
    ns = {{"__name__": "__main__", "__builtins__": __builtins__}}
    try:
        exec(compile(_CODE, "solution.py", "exec"), ns)
    except BaseException as exc:
        return {{"load_error": _err(exc), "outcomes": []}}
    outcomes = []
    for src in _TESTS:
        try:
            cases = list(_cases(src))
        except SyntaxError as exc:
            outcomes.append({{"name": src.strip()[:200], "passed": False, "message": "test does not parse: " + str(exc)}})
            continue
        for kind, node, name in cases:
            mod = _ast.Module(body=[node], type_ignores=[])
            try:
                exec(compile(mod, "<tests>", "exec"), ns)
                if kind == "func":
                    ns[name]()
                if kind != "setup":
                    outcomes.append({{"name": name, "passed": True, "message": ""}})
            except AssertionError as exc:
                msg = _assert_message(node, ns, exc) if kind == "assert" else (str(exc) or "assertion failed")
                outcomes.append({{"name": name, "passed": False, "message": msg}})
            except BaseException as exc:
                if kind == "setup":
                    outcomes.append({{"name": name[:200], "passed": False, "message": "setup raised " + type(exc).__name__ + ": " + str(exc)}})
                else:
                    outcomes.append({{"name": name, "passed": False, "message": "raised " + type(exc).__name__ + ": " + str(exc)}})
    if _ENTRY and callable(ns.get("check")):
        try:
            ns["check"](ns[_ENTRY])
            outcomes.append({{"name": "check(" + _ENTRY + ")", "passed": True, "message": ""}})
        except BaseException as exc:
            outcomes.append({{"name": "check(" + _ENTRY + ")", "passed": False, "message": type(exc).__name__ + ": " + str(exc)}})
    return {{"outcomes": outcomes}}


_report = _main()
_sys.stdout.flush()
_sys.stdout.write("\n" + _NONCE + _json.dumps(_report) + "\n")
_sys.stdout.flush()
'''


def build_test_program(
    code: str, tests: str | Sequence[str], *, entry_point: str | None = None
) -> tuple[str, str]:
    """Return (program, nonce): one script that runs ``code`` then every test case."""
    nonce = "@@ragcoder-report-" + secrets.token_hex(8) + "@@"
    test_list = [tests] if isinstance(tests, str) else list(tests)
    program = _PROGRAM.format(
        nonce=nonce, code=code, tests=test_list, entry=entry_point, max_tb=_MAX_TRACEBACK_CHARS
    )
    return program, nonce


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


def parse_test_report(result: ExecResult, nonce: str) -> TestReport:
    """Split the report line from ``result.stdout`` and build the TestReport."""
    idx = result.stdout.rfind(nonce)
    if idx < 0:  # the program never reached the report: crash, timeout, OOM, os._exit ...
        err = result.error or error_from_stderr(result.stderr)
        return TestReport(passed=False, outcomes=(), result=result, error=err)
    line = result.stdout[idx + len(nonce) :].split("\n", 1)[0]
    stdout = result.stdout[:idx].removesuffix("\n")
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        data = {"outcomes": []}
    clean = replace(result, stdout=stdout)
    outcomes = tuple(
        TestOutcome(name=str(o["name"]), passed=bool(o["passed"]), message=str(o.get("message", "")))
        for o in data.get("outcomes", [])
    )
    load = data.get("load_error")
    if load:
        err = ErrorInfo(name=load["name"], value=load["value"], traceback=load["traceback"])
        return TestReport(passed=False, outcomes=outcomes, result=replace(clean, error=err), error=err)
    passed = (
        bool(outcomes)
        and all(o.passed for o in outcomes)
        and clean.exit_code == 0
        and not (clean.timed_out or clean.oom_killed)
    )
    return TestReport(passed=passed, outcomes=outcomes, result=clean)
