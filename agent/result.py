"""What the agent returns: every candidate it ran, the tests it ran them against, the final code,
whether it passed its checks and how far that can be trusted (``verdict``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ragcoder.sandbox import ExecResult, TestReport

CheckKind = Literal["tests", "examples", "runs"]  # user tests > examples in the instruction > runs cleanly
# missing-package: the code needs a package the sandbox lacks (ExecResult.missing says which and how to get it)
StopReason = Literal["passed", "budget", "repeated", "empty", "sandbox-error", "missing-package"]
# verified: the user's tests or the instruction's examples passed; self-tested: only tests the model
# wrote passed (there were no others); unverified: anything else
Verdict = Literal["verified", "self-tested", "unverified"]
TestOrigin = Literal["user", "example", "generated"]
Origin = Literal["greedy", "sampled", "repair"]


@dataclass
class TestCase:
    """One test every candidate is run against."""

    __test__ = False  # not a pytest class

    name: str  # what the sandbox reports it as: the assert's source, or a test function's name
    origin: TestOrigin
    snippet: str = ""  # the source sent to the sandbox (a user's setup lines are their own snippets)
    dropped: str = ""  # why a generated test does not count ("" when it does)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "dropped": self.dropped}


@dataclass
class Attempt:
    """One candidate: how it was made and how it did against every test."""

    number: int  # the round that made it (1 = first generation, then repair rounds)
    kind: Literal["generate", "repair"]
    code: str
    result: ExecResult
    passed: bool  # it passed the hard checks: user tests, else the examples, else it ran cleanly
    report: TestReport | None = None  # when tests were run
    feedback: str = ""  # what was sent back to the model when this candidate was repaired
    generate_ms: float = 0.0  # of the call that made it (a batched call is shared by its candidates)
    run_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, reused from an earlier prompt (a repair: its first attempt's)
    temperature: float | None = None  # the draft was sampled at this temperature; None: greedy
    candidate: int = 1  # 1-based, over every candidate of the request
    origin: Origin = "greedy"
    seed: int | None = None
    duplicate_of: int | None = None  # the same code (normalised) as this earlier candidate: not run again
    statuses: dict[str, str] = field(default_factory=dict)  # test name -> pass | fail | error | timeout
    outputs: dict[str, str] = field(default_factory=dict)  # generated input -> repr of what it returned

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("result", "report", "statuses", "outputs")}
        d["result"] = self.result.to_dict()
        if self.report is not None:
            d["tests"] = [asdict(o) for o in self.report.outcomes]
            d["tests_summary"] = self.report.summary()
        return d


@dataclass
class Selection:
    """Which candidate won, and why."""

    method: str  # "codet", "mbr", "only" (one candidate could win) or "none" (none passed the hard checks)
    winner: int  # candidate number (1-based)
    reason: str  # one line
    agree: int = 1  # candidates (repeats counted) in the winner's group: same tests passed
    groups: list[dict[str, Any]] = field(default_factory=list)  # codet groups, best first
    other: int | None = None  # the candidate the other method would have chosen (to compare them)


@dataclass
class AgentResult:
    """The outcome of one instruction."""

    instruction: str
    code: str
    passed: bool
    check: CheckKind
    stop_reason: StopReason
    attempts: list[Attempt] = field(default_factory=list)  # the code held after each round
    sources: list[str] = field(default_factory=list)  # retrieved documents, as `path:lines (symbol)`
    retrieval: str = ""  # "off", "skipped: <why>" or "<n> doc(s)[: <why>]"
    tests: str | None = None  # the tests that decided `passed` (user's or taken from the instruction)
    total_ms: float = 0.0
    verdict: Verdict = "unverified"
    candidates: list[Attempt] = field(default_factory=list)  # every candidate, repeats included
    test_cases: list[TestCase] = field(default_factory=list)  # user, example and generated tests
    selection: Selection | None = None
    function: str | None = None  # the function the request names (None: no tests could be generated)
    notes: list[str] = field(default_factory=list)  # what the user should know about the checks
    test_tokens: tuple[int, int] = (0, 0)  # (input, output) tokens spent writing tests

    @property
    def output(self) -> str:
        """stdout of the final run."""
        return self.attempts[-1].result.stdout if self.attempts else ""

    @property
    def repairs(self) -> int:
        """Repair rounds: the rounds after the first (each round's winner is an attempt, and it may
        be a candidate of an earlier round when no repair beat it)."""
        return max(len(self.attempts) - 1, 0)

    @property
    def input_tokens(self) -> int:
        return sum(a.input_tokens for a in self._generated) + self.test_tokens[0]

    @property
    def output_tokens(self) -> int:
        return sum(a.output_tokens for a in self._generated) + self.test_tokens[1]

    @property
    def _generated(self) -> list[Attempt]:
        return self.candidates or self.attempts

    def counted_tests(self, origin: TestOrigin) -> list[TestCase]:
        return [t for t in self.test_cases if t.origin == origin and not t.dropped]

    def summary(self) -> str:
        """One line: e.g. ``6 candidates, 4 agree, 3/3 examples, 7/8 own tests: verified``."""
        winner = self.candidates[self.selection.winner - 1] if self.selection and self.candidates else None
        parts = [f"{len(self.candidates)} candidate{'s' if len(self.candidates) != 1 else ''}"]
        if self.selection is not None and len(self.candidates) > 1:
            parts.append(f"{self.selection.agree} agree")
        for origin, label in (("user", "your tests"), ("example", "examples"), ("generated", "own tests")):
            counted = self.counted_tests(origin)  # type: ignore[arg-type]
            if counted and winner is not None:
                ok = sum(winner.statuses.get(t.name) == "pass" for t in counted)
                parts.append(f"{ok}/{len(counted)} {label}")
        return ", ".join(parts) + f": {self.verdict}"

    def counts(self) -> dict[str, Any]:
        """The numbers batch and eval rows record beside the verdict."""
        unique = [c for c in self.candidates if c.duplicate_of is None]
        winner = self.candidates[self.selection.winner - 1] if self.selection and self.candidates else None
        generated = self.counted_tests("generated")
        return {
            "verdict": self.verdict,
            "candidates": len(self.candidates),
            "distinct_candidates": len(unique),
            "agree": self.selection.agree if self.selection else 0,
            "winner": self.selection.winner if self.selection else None,
            "selection": self.selection.method if self.selection else None,
            "hard_tests": sum(t.origin != "generated" for t in self.test_cases),
            "own_tests": len(generated),
            "own_tests_dropped": sum(t.origin == "generated" and bool(t.dropped) for t in self.test_cases),
            "own_tests_passed": sum(winner.statuses.get(t.name) == "pass" for t in generated)
            if winner
            else 0,
            "function": self.function,
        }

    def record_fields(self, score: Callable[[str], bool] | None = None) -> dict[str, Any]:
        """What batch and eval rows record about the checks: the counts, the verdict, every test and
        every candidate. ``score(code)`` (an eval's hidden tests) is recorded for each distinct one."""
        rows = [candidate_row(c, self.test_cases) for c in self.candidates]
        if score is not None:
            for row, candidate in zip(rows, self.candidates, strict=True):
                row["hidden_passed"] = score(candidate.code) if candidate.duplicate_of is None else None
        return {
            **self.counts(),
            "notes": self.notes,
            "summary": self.summary(),
            "selection_detail": asdict(self.selection) if self.selection else None,
            "test_cases": [t.to_dict() for t in self.test_cases],
            "candidate_runs": rows,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "code": self.code,
            "passed": self.passed,
            "check": self.check,
            "stop_reason": self.stop_reason,
            "repairs": self.repairs,
            "output": self.output,
            "sources": self.sources,
            "retrieval": self.retrieval,
            "tests": self.tests,
            "total_ms": round(self.total_ms, 1),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            **self.record_fields(),
            "attempts": [a.to_dict() for a in self.attempts],
        }


def candidate_row(candidate: Attempt, tests: list[TestCase]) -> dict[str, Any]:
    """One candidate as a compact record: its code (unless a repeat), how it was made, and one
    letter per test in ``tests`` order (P pass, F fail, E error, T timeout, - not run)."""
    letters = {"pass": "P", "fail": "F", "error": "E", "timeout": "T"}
    return {
        "candidate": candidate.candidate,
        "round": candidate.number,
        "origin": candidate.origin,
        "seed": candidate.seed,
        "duplicate_of": candidate.duplicate_of,
        "code": candidate.code if candidate.duplicate_of is None else None,
        "passed": candidate.passed,
        "tests": "".join(letters.get(candidate.statuses.get(t.name, ""), "-") for t in tests),
        "failure": candidate.result.failure_summary(),
    }
