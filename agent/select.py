"""Selection by execution: run every candidate against every test, then choose.

- **Hard checks** are the user's tests, else the examples in the instruction, else running cleanly:
  a candidate that fails one is out.
- **The model's own tests** rank the rest, CodeT-style (Chen et al. 2022, "CodeT: code generation
  with generated tests"): candidates that pass the same set of generated tests form a group, and a
  group scores its size (repeats counted) times the number of tests it passes. The winner is the
  earliest candidate of the best group, so the greedy one wins ties.
- **Output agreement** (MBR-exec, Shi et al. 2022) is the alternative: the generated tests' calls
  are run on every candidate, and the candidate whose outputs agree most with the others' wins.
  Both choices are recorded, whichever decides, so one eval run compares them.
- A generated test that hangs or raises for every candidate that loaded is dropped: it is a broken
  test, and it counts against no candidate.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ragcoder.agent.result import Attempt, Selection, TestCase, Verdict
from ragcoder.agent.runnable import traced_call
from ragcoder.sandbox import ExecResult, Sandbox, SandboxError, TestOutcome, TestReport

SELECTION_METHODS = ("codet", "mbr")
DEFAULT_TEST_TIMEOUT_S = 1.0  # per test: the model's tests call a small function on small inputs
SLOW_AFTER_TIMEOUTS = 3  # a candidate that hung this often gets a short limit for its other tests
SLOW_LIMIT_S = 0.1
# self-tested: the code ran cleanly and passed at least this share of the model's own tests (its
# expected values are often wrong; candidates at >= 0.8 passed the hidden tests: docs/results.md)
SELF_TESTED_SHARE = 0.8
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


def drop_broken_tests(tests: Sequence[TestCase], runs: Sequence[Attempt]) -> None:
    """Mark each generated test that hung or raised for every candidate that loaded as dropped.

    It takes two candidates to tell a broken test from broken code: with one, nothing is dropped.
    """
    loaded = [r for r in runs if r.statuses]
    if len(loaded) < 2:
        for test in tests:
            test.dropped = ""
        return
    for test in tests:
        if test.origin != "generated":
            continue
        statuses = {r.statuses.get(test.name, "error") for r in loaded}
        test.dropped = ""
        if statuses <= {"timeout"}:
            test.dropped = "it hung for every candidate"
        elif statuses <= {"timeout", "error"}:
            test.dropped = "it raised (or hung) for every candidate"


def codet_groups(
    runs: Sequence[Attempt], weights: dict[int, int], counted: Sequence[str]
) -> list[dict[str, object]]:
    """Candidates grouped by the set of counted tests they pass, best first; each group's score is
    its size (repeats counted) x the number of tests it passes."""
    by_set: dict[frozenset[str], list[Attempt]] = {}
    for run in runs:
        passed = frozenset(name for name in counted if run.statuses.get(name) == "pass")
        by_set.setdefault(passed, []).append(run)
    groups = []
    for passed, members in by_set.items():
        size = sum(weights.get(m.candidate, 1) for m in members)
        groups.append(
            {
                "candidates": [m.candidate for m in members],
                "size": size,
                "tests_passed": len(passed),
                "score": size * len(passed),
            }
        )
    groups.sort(key=lambda g: (-g["score"], -g["size"], min(g["candidates"])))  # type: ignore[operator]
    return groups


def mbr_scores(runs: Sequence[Attempt], weights: dict[int, int]) -> dict[int, int]:
    """For each candidate: how many outputs of the others (repeats counted) equal its own."""
    scores: dict[int, int] = {}
    for run in runs:
        score = 0
        for other in runs:
            same = sum(run.outputs.get(k) == v for k, v in other.outputs.items())
            copies = weights.get(other.candidate, 1) - (other is run)
            score += copies * same
        scores[run.candidate] = score
    return scores


def choose(
    runs: Sequence[Attempt], weights: dict[int, int], tests: Sequence[TestCase], method: str = "codet"
) -> Selection:
    """The winner among the distinct candidates ``runs``, and why."""
    if method not in SELECTION_METHODS:
        raise ValueError(f"selection {method!r}: choose one of {', '.join(SELECTION_METHODS)}")
    counted = [t.name for t in tests if t.origin == "generated" and not t.dropped]
    eligible = [r for r in runs if r.passed]
    hard = [t for t in tests if t.name and t.origin != "generated"]
    if not eligible:  # nobody passed the hard checks: the closest one (then by own tests, then the first)
        scores = {c: g["score"] for g in codet_groups(runs, weights, counted) for c in g["candidates"]}  # type: ignore[union-attr]
        best = max(
            runs, key=lambda r: (_hard_passed(r, hard), r.statuses != {}, scores[r.candidate], -r.candidate)
        )
        return Selection(
            "none", best.candidate, _closest_reason(best, hard), agree=weights.get(best.candidate, 1)
        )
    groups = codet_groups(eligible, weights, counted)
    codet = min(groups[0]["candidates"])  # type: ignore[type-var]
    mbr = _mbr_winner(eligible, weights)
    winner, other = (codet, mbr) if method == "codet" else (mbr, codet)
    group = next(g for g in groups if winner in g["candidates"])  # type: ignore[operator]
    gate = f"{len(eligible)} of {len(runs)} distinct candidates passed {hard_words(hard)}"
    if len(eligible) == 1:
        return Selection(
            "only",
            winner,
            f"the only one of {len(runs)} that passed {hard_words(hard)}",
            agree=int(group["size"]),
            groups=groups,
            other=other,
        )  # type: ignore[arg-type]
    if method == "codet":
        why = (
            f"{gate}; its group of {group['size']} passes {group['tests_passed']}/{len(counted)} own "
            f"tests (score {group['score']}" + (f", next {groups[1]['score']})" if len(groups) > 1 else ")")
        )
    else:
        why = f"{gate}; its outputs agree most with the others' ({mbr_scores(eligible, weights)[winner]} matches)"
    return Selection(method, winner, why, agree=int(group["size"]), groups=groups, other=other)  # type: ignore[arg-type]


def _mbr_winner(runs: Sequence[Attempt], weights: dict[int, int]) -> int:
    scores = mbr_scores(runs, weights)
    return max(runs, key=lambda r: (scores[r.candidate], -r.candidate)).candidate


def _hard_passed(run: Attempt, hard: Sequence[TestCase]) -> int:
    return sum(run.statuses.get(t.name) == "pass" for t in hard)


def hard_words(hard: Sequence[TestCase]) -> str:
    if not hard:
        return "running cleanly"
    kinds = {t.origin for t in hard}
    return "your tests" if "user" in kinds else "the instruction's examples"


def _closest_reason(best: Attempt, hard: Sequence[TestCase]) -> str:
    if not hard:
        return f"none ran cleanly; candidate {best.candidate} got furthest"
    return f"none passed {hard_words(hard)}; candidate {best.candidate} passed {_hard_passed(best, hard)}/{len(hard)}"


def own_tests_passed(run: Attempt, tests: Sequence[TestCase]) -> tuple[int, int]:
    """(passed, counted): the model's own tests, those not dropped, that ``run`` passes."""
    counted = [t.name for t in tests if t.origin == "generated" and not t.dropped]
    return sum(run.statuses.get(name) == "pass" for name in counted), len(counted)


def verdict_for(winner: Attempt, tests: Sequence[TestCase]) -> Verdict:
    """verified: hard tests exist and all passed; self-tested: there were none, and the code ran
    and passed at least SELF_TESTED_SHARE of its own tests (at least one); else unverified."""
    hard = [t for t in tests if t.name and t.origin != "generated"]
    if not winner.passed:
        return "unverified"
    if hard:
        return "verified" if all(winner.statuses.get(t.name) == "pass" for t in hard) else "unverified"
    passed, counted = own_tests_passed(winner, tests)
    if counted and passed >= SELF_TESTED_SHARE * counted:
        return "self-tested"
    return "unverified"
