"""Running a candidate against every test in one sandbox request, and reading what came back.

- The tests are the user's (each assert, each ``test_*`` function, ``check``), the instruction's
  examples, or the model's own asserts, each a snippet run after the candidate's code.
- A per-test timer in the sandbox (SIGALRM) stops a test that hangs; a candidate that hung
  ``SLOW_AFTER_TIMEOUTS`` times gets ``SLOW_LIMIT_S`` for its other tests.
- The calls the model's tests make (``Probe``) are run on every candidate and their outputs sent
  back in one line, for :mod:`ragcoder.agent.select`'s output agreement.
- A sandbox failure is retried once on a fresh worker; cases lost after a hang run again.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ragcoder.agent.result import Attempt, TestCase
from ragcoder.agent.runnable import traced_call
from ragcoder.sandbox import ExecResult, Sandbox, SandboxError, TestOutcome, TestReport

DEFAULT_TEST_TIMEOUT_S = 1.0  # per test: the model's tests call a small function on small inputs
SLOW_AFTER_TIMEOUTS = 3  # a candidate that hung this often gets a short limit for its other tests
SLOW_LIMIT_S = 0.1
_TIMEOUT_EXC = "_RagcoderTestTimeout"
_END = "assert '@@ragcoder-tests-done@@'"
_OUTPUTS_MARK = "@@ragcoder-outputs@@"
_NOT_RUN = "not run: "  # the judge's word for a case after the code's process ended, with no fresh one

# Runs first: a per-test timer (SIGALRM; the code runs in the sandbox's main thread) that raises
# only inside a test or the candidate's code, never in the harness between tests.
_SETUP = f"""
import signal as _rc_signal, json as _rc_json
class {_TIMEOUT_EXC}(BaseException):
    pass
_rc_state = {{"timeouts": 0}}
_rc_outputs = {{}}
def _rc_alarm(signum, frame):
    while frame is not None:
        if frame.f_code.co_filename in ("<tests>", "<test>", "solution.py"):
            _rc_state["timeouts"] += 1
            raise {_TIMEOUT_EXC}("the test ran past its time limit")
        frame = frame.f_back
_rc_signal.signal(_rc_signal.SIGALRM, _rc_alarm)
def _rc_arm(seconds):
    if seconds and _rc_state["timeouts"] >= {SLOW_AFTER_TIMEOUTS}:
        seconds = min(seconds, {SLOW_LIMIT_S})
    _rc_signal.setitimer(_rc_signal.ITIMER_REAL, seconds)
def _rc_output(key, thunk):
    try:
        value = repr(thunk())[:200]
    except {_TIMEOUT_EXC}:
        raise
    except BaseException as exc:
        value = "raised " + type(exc).__name__
    _rc_outputs[key] = value
    return True
"""
_FINISH = f'_rc_arm(0)\nprint("\\n{_OUTPUTS_MARK}" + _rc_json.dumps(_rc_outputs))\n{_END}\n'


@dataclass
class Probe:
    """A call taken from a generated test, whose output is compared across candidates (MBR-exec)."""

    expr: str  # e.g. ``f([1, 2])``
    name: str  # how the sandbox reports it


def user_test_cases(source: str, entry_point: str | None) -> list[TestCase]:
    """The user's test source split into cases (each assert, each ``test_*`` function, ``check``);
    other statements stay as setup snippets (origin "user", empty name)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # sent as it is: the harness reports it as a failing test
        return [TestCase(name=source.strip()[:200], origin="user", snippet=source)]
    cases: list[TestCase] = []
    lines = source.splitlines()
    for node in tree.body:
        decorators = getattr(node, "decorator_list", [])
        segment = (  # a decorated function's own segment leaves its decorators out
            "\n".join(lines[decorators[0].lineno - 1 : node.end_lineno])
            if decorators
            else ast.get_source_segment(source, node) or ast.unparse(node)
        )
        if isinstance(node, ast.Assert):
            cases.append(_case(segment, "user"))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            cases.append(TestCase(name=node.name, origin="user", snippet=f"_rc_arm(LIMIT)\n{segment}\n"))
        else:
            cases.append(TestCase(name="", origin="user", snippet=segment + "\n"))
            if entry_point and isinstance(node, ast.FunctionDef) and node.name == "check":
                cases.append(TestCase(name=f"check({entry_point})", origin="user", snippet=""))
    return cases


def assert_cases(lines: Sequence[str], origin: str) -> list[TestCase]:
    return [_case(line, origin) for line in lines if line.strip()]


def _case(source: str, origin: str) -> TestCase:
    snippet = f"_rc_arm(LIMIT)\n{source.strip()}\n"
    node = ast.parse(snippet).body[1]
    name = (ast.get_source_segment(snippet, node) or ast.unparse(node)).strip()
    return TestCase(name=name, origin=origin, snippet=snippet)  # type: ignore[arg-type]


def probes_for(tests: Sequence[TestCase], function: str) -> list[Probe]:
    """The distinct calls of ``function`` that the counted generated tests make."""
    probes: list[Probe] = []
    seen: set[str] = set()
    for test in tests:
        if test.origin != "generated" or test.dropped:
            continue
        for node in ast.walk(ast.parse(test.name)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function:
                expr = ast.unparse(node)
                if expr not in seen:
                    seen.add(expr)
                    probes.append(Probe(expr, f"assert _rc_output({expr!r}, lambda: {expr})"))
    return probes


def run_candidate(
    sandbox: Sandbox,
    attempt: Attempt,
    tests: Sequence[TestCase],
    probes: Sequence[Probe],
    *,
    entry_point: str | None,
    test_timeout: float,
    timeout: float | None,
) -> None:
    """Run ``attempt.code`` against every test in one sandbox request; fill in its result, report,
    per-test statuses, outputs and whether it passed the hard checks.

    A sandbox failure is retried once on a fresh worker; a second one is a ``SandboxError`` result.
    """
    if not attempt.code.strip():
        attempt.result = _error_result("NoCode", "the reply contained no Python code")
        return
    if not tests and not probes:  # nothing to test: the check is that it runs cleanly
        _run_plain(sandbox, attempt, timeout)
        return
    problem = ""
    for _ in (1, 2):
        try:
            report = _run_every_test(sandbox, attempt.code, tests, probes, entry_point, test_timeout, timeout)
        except SandboxError as exc:
            problem = str(exc)
            continue
        _read_report(attempt, report, tests, probes)
        return
    attempt.result = _error_result("SandboxError", problem)


def _run_every_test(
    sandbox: Sandbox,
    code: str,
    tests: Sequence[TestCase],
    probes: Sequence[Probe],
    entry_point: str | None,
    test_timeout: float,
    timeout: float | None,
) -> TestReport:
    """One request, and another for the cases it could not run: a sandbox without the run server
    judges with one process for the code (``Sandbox.run_tests``), so after a hang the code's
    process is gone and later cases come back "not run". Those run again on fresh code, without
    the case that hung: a hang costs its own test, never the ones after it. SandboxError for a
    crashed sandbox."""
    report = _request(sandbox, code, tests, probes, entry_point, test_timeout, timeout, timeouts=0)
    pending = len([t for t in tests if t.name]) + len(probes)
    while report.error is None:
        skipped = {o.name for o in report.outcomes if o.message.startswith(_NOT_RUN)}
        ran = [o for o in report.outcomes if not o.message.startswith(_NOT_RUN)]
        hung = {o.name for o in ran if _status(o.passed, o.message) == "timeout"}
        rest = [t for t in tests if not t.name or t.name in skipped]  # setup lines run again
        # the probes' outputs went with the lost last line: every probe runs again but one that hung
        again = [p for p in probes if p.name not in hung]
        left = len([t for t in rest if t.name]) + len(again)
        if not skipped or left >= pending:  # all ran, or nothing would run that did not before
            break
        pending = left
        more = _request(sandbox, code, rest, again, entry_point, test_timeout, timeout, timeouts=len(hung))
        rerun = {p.name for p in again}
        stdout = report.result.stdout + more.result.stdout  # the outputs' line is the last one
        report = replace(
            more,
            outcomes=(*(o for o in ran if o.name not in rerun), *more.outcomes),
            result=replace(more.result, stdout=stdout),
        )
    return report


def _request(
    sandbox: Sandbox,
    code: str,
    tests: Sequence[TestCase],
    probes: Sequence[Probe],
    entry_point: str | None,
    test_timeout: float,
    timeout: float | None,
    timeouts: int,
) -> TestReport:
    snippets = [_SETUP, f'_rc_state["timeouts"] = {timeouts}\n']
    snippets += [t.snippet.replace("LIMIT", repr(test_timeout)) for t in tests if t.snippet]
    snippets += [f"_rc_arm({test_timeout!r})\n{p.name}\n" for p in probes]
    snippets.append(_FINISH)
    checked = len([t for t in tests if t.name]) + len(probes)
    limit = (timeout or 10.0) + checked * test_timeout  # the timer bounds each test; this, the loading
    report = traced_call(
        "sandbox.run_tests",
        {"code": code, "tests": snippets, "entry_point": entry_point},
        lambda: sandbox.run_tests(code, snippets, entry_point=entry_point, timeout=limit),
    )
    error = report.result.error
    if error is not None and error.name == "SandboxCrashed":
        raise SandboxError(error.summary())
    return report


def _run_plain(sandbox: Sandbox, attempt: Attempt, timeout: float | None) -> None:
    problem = ""
    for _ in (1, 2):
        try:
            result = traced_call(
                "sandbox.run", {"code": attempt.code}, lambda: sandbox.run(attempt.code, timeout=timeout)
            )
        except SandboxError as exc:
            problem = str(exc)
            continue
        if result.error is not None and result.error.name == "SandboxCrashed":
            problem = result.error.summary()
            continue
        attempt.result, attempt.passed = result, result.ok
        return
    attempt.result = _error_result("SandboxError", problem)


def _error_result(name: str, value: str) -> ExecResult:
    from ragcoder.sandbox import ErrorInfo

    return ExecResult(exit_code=None, error=ErrorInfo(name=name, value=value, traceback=""))


def _read_report(
    attempt: Attempt, report: TestReport, tests: Sequence[TestCase], probes: Sequence[Probe]
) -> None:
    stdout = report.result.stdout
    cut = stdout.rfind("\n" + _OUTPUTS_MARK)
    if cut >= 0:
        line = stdout[cut + 1 + len(_OUTPUTS_MARK) :].split("\n", 1)[0]
        try:
            attempt.outputs = {str(k): str(v) for k, v in json.loads(line).items()}
        except (json.JSONDecodeError, AttributeError):
            attempt.outputs = {}
        stdout = stdout[:cut]
    own = {p.name for p in probes} | {_END}
    named = {t.name for t in tests if t.name}
    outcomes = [o for o in report.outcomes if o.name not in own]
    attempt.statuses = {o.name: _status(o.passed, o.message) for o in outcomes if o.name in named}
    for probe in probes:
        if probe.expr not in attempt.outputs:  # it hung (or the run ended early)
            attempt.outputs[probe.expr] = "timeout"
    finished = any(o.name == _END for o in report.outcomes)
    hard = [t for t in tests if t.name and t.origin != "generated"]
    stray = [o for o in outcomes if o.name not in named and not o.passed]  # a setup line that raised
    visible = [_readable(o) for o in report.outcomes if o.name not in own]
    attempt.report = replace(report, outcomes=tuple(visible), passed=False)
    attempt.result = replace(report.result, stdout=stdout)
    attempt.passed = (
        finished
        and report.error is None
        and attempt.result.ok
        and not stray
        and all(attempt.statuses.get(t.name) == "pass" for t in hard)
    )
    attempt.report = replace(attempt.report, passed=attempt.passed)


def _readable(outcome: TestOutcome) -> TestOutcome:
    if outcome.message.startswith(f"raised {_TIMEOUT_EXC}"):
        return replace(outcome, message="did not finish in time (an endless loop, or far too slow)")
    return outcome


def _status(passed: bool, message: str) -> str:
    if passed:
        return "pass"
    if message.startswith(f"raised {_TIMEOUT_EXC}"):
        return "timeout"
    return "error" if message.startswith(("raised ", "setup raised ")) else "fail"
