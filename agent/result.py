"""What the agent returns: every attempt, the final code and whether it passed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ragcoder.sandbox import ExecResult, TestReport

CheckKind = Literal["tests", "examples", "runs"]  # user tests > examples in the instruction > runs cleanly
# missing-package: the code needs a package the sandbox lacks (ExecResult.missing says which and how to get it)
StopReason = Literal["passed", "budget", "repeated", "empty", "sandbox-error", "missing-package"]


@dataclass
class Attempt:
    """One generate-or-repair step and the run that checked it."""

    number: int  # 1-based
    kind: Literal["generate", "repair"]
    code: str
    result: ExecResult
    passed: bool
    report: TestReport | None = None  # when tests were run
    feedback: str = ""  # what was sent back to the model after this attempt failed
    generate_ms: float = 0.0
    run_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, reused from an earlier prompt (a repair: its first attempt's)
    temperature: float | None = None  # the draft was sampled at this temperature; None: greedy

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("result", "report")}
        d["result"] = self.result.to_dict()
        if self.report is not None:
            d["tests"] = [asdict(o) for o in self.report.outcomes]
            d["tests_summary"] = self.report.summary()
        return d


@dataclass
class AgentResult:
    """The outcome of one instruction."""

    instruction: str
    code: str
    passed: bool
    check: CheckKind
    stop_reason: StopReason
    attempts: list[Attempt] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # retrieved documents, as `path:lines (symbol)`
    retrieval: str = ""  # "off", "skipped: <why>" or "<n> doc(s)[: <why>]"
    tests: str | None = None  # the tests that decided `passed` (user's or taken from the instruction)
    total_ms: float = 0.0

    @property
    def output(self) -> str:
        """stdout of the final run."""
        return self.attempts[-1].result.stdout if self.attempts else ""

    @property
    def repairs(self) -> int:
        return sum(a.kind == "repair" for a in self.attempts)

    @property
    def input_tokens(self) -> int:
        return sum(a.input_tokens for a in self.attempts)

    @property
    def output_tokens(self) -> int:
        return sum(a.output_tokens for a in self.attempts)

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
            "attempts": [a.to_dict() for a in self.attempts],
        }
