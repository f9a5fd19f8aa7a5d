"""The HumanEval harness: the agent solves each problem from its prompt alone; the hidden tests
score the final code (and the code after each attempt) in the sandbox.

One JSON line per (task, sample) is appended and fsync'd as it finishes, by the runner batch runs
use too (``ragcoder.agent.runner``); a rerun with the same output file skips what is there.
``ragcoder.finetune.report`` turns the file into pass@k, pass rate by attempt, cost and similarity
numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragcoder.agent.loop import CodeAgent
from ragcoder.agent.records import ResultsFile, held, read_records, to_json_line
from ragcoder.agent.result import AgentResult
from ragcoder.agent.runner import Job, Outcome, Plan, plan_jobs, run_jobs
from ragcoder.agent.tasks import Task, humaneval_task
from ragcoder.finetune.humaneval import Problem, load_problems, program_for, words_instruction
from ragcoder.finetune.metrics import bleu, codebleu, rouge_l
from ragcoder.sandbox import Sandbox, SandboxError

HIDDEN_TEST_TIMEOUT_S = 20.0  # HumanEval's slowest checks take a few seconds; 20 s leaves room on a busy box


@dataclass
class EvalSummary:
    to_run: int = 0
    skipped: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def add(self, record: dict[str, Any]) -> None:
        """Count one finished sample: an error record, a pass or a failure by the hidden tests."""
        if "error" in record:
            self.errors += 1
        elif record["passed"]:
            self.passed += 1
        else:
            self.failed += 1


@dataclass(frozen=True)
class HiddenScore:
    passed: bool
    detail: str  # "" when passed, else one line on what failed


PROMPT_STYLES = ("stub", "words")


def agent_tasks(problems: Iterable[Problem], style: str = "stub") -> dict[str, Task]:
    """The agent's view of each problem: its prompt only, as the agent's HumanEval reader words it.

    ``style="words"`` asks each task in words instead (``ragcoder.finetune.humaneval.words_instruction``;
    a prompt that cannot be restated keeps its stub).
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r}: choose one of {', '.join(PROMPT_STYLES)}")
    tasks: dict[str, Task] = {}
    for problem in problems:
        task = humaneval_task(problem.task_id, problem.prompt, problem.entry_point)
        words = words_instruction(problem) if style == "words" else None
        tasks[problem.task_id] = replace(task, instruction=words) if words else task
    return tasks


def score_hidden(sandbox: Sandbox, problem: Problem, code: str, timeout: float | None = None) -> HiddenScore:
    """Run the hidden ``check(entry_point)`` on ``code`` (prompt imports/helpers added when missing)."""
    if not code.strip():
        return HiddenScore(False, "no code")
    program = program_for(problem, code)
    try:
        report = sandbox.run_tests(
            program, problem.test, entry_point=problem.entry_point, timeout=timeout or HIDDEN_TEST_TIMEOUT_S
        )
    except SandboxError as exc:
        return HiddenScore(False, f"sandbox error: {exc}")
    if report.passed:
        return HiddenScore(True, "")
    failed = report.failed
    detail = report.summary()
    if failed and failed[0].message:
        detail += f"; {failed[0].message.splitlines()[0][:200]}"
    return HiddenScore(False, detail)


def record_for(
    problem: Problem, sample: int, samples: int, result: AgentResult, sandbox: Sandbox
) -> dict[str, Any]:
    """The JSON line for one solved-or-not task: hidden verdict per attempt and for the final code."""
    verdicts: dict[str, HiddenScore] = {}

    def verdict(code: str) -> HiddenScore:
        if code not in verdicts:
            verdicts[code] = score_hidden(sandbox, problem, code)
        return verdicts[code]

    attempts = []
    for attempt in result.attempts:
        hidden = verdict(attempt.code)
        attempts.append(
            {
                "number": attempt.number,
                "kind": attempt.kind,
                "code": attempt.code,
                "visible_passed": attempt.passed,
                "passed": hidden.passed,
                "hidden_detail": hidden.detail,
                "feedback": attempt.feedback,
                "generate_ms": round(attempt.generate_ms, 1),
                "run_ms": round(attempt.run_ms, 1),
                "input_tokens": attempt.input_tokens,
                "output_tokens": attempt.output_tokens,
                "cached_tokens": attempt.cached_tokens,
                "temperature": attempt.temperature,
            }
        )
    final = verdict(result.code)
    reference = problem.canonical_code
    return {
        "id": record_id(problem, sample, samples),
        "task_id": problem.task_id,
        "split": problem.split,
        "sample": sample,
        "instruction": result.instruction,
        "code": result.code,
        "passed": final.passed,
        "hidden_detail": final.detail,
        "visible_passed": result.passed,
        "check": result.check,
        "stop_reason": result.stop_reason,
        "retrieval": result.retrieval,
        "sources": result.sources,
        "attempts": attempts,
        "total_ms": round(result.total_ms, 1),
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "bleu": round(bleu(result.code, reference), 4),
        "codebleu": _round(codebleu(result.code, reference)),
        "rouge_l": round(rouge_l(result.code, reference), 4),
        **result.record_fields(lambda code: verdict(code).passed),  # verdict, candidates, tests
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def record_id(problem: Problem, sample: int, samples: int) -> str:
    return problem.task_id if samples == 1 else f"{problem.task_id}#{sample}"


def plan_eval(problems: list[Problem], samples: int, done: set[str]) -> Plan[tuple[Problem, int]]:
    """The (problem, sample) pairs whose record is not in ``done``."""
    jobs = (
        Job(record_id(problem, sample, samples), (problem, sample))
        for problem in problems
        for sample in range(samples)
    )
    return plan_jobs(jobs, done)


def failed_record(item: tuple[Problem, int]) -> dict[str, Any]:
    """The record of a sample whose solving raised: failed, with the runner adding the error."""
    problem, sample = item
    return {"task_id": problem.task_id, "split": problem.split, "sample": sample, "passed": False}


def run_eval(
    agent: CodeAgent | None,
    problems: list[Problem],
    out: Path | ResultsFile,
    *,
    samples: int = 1,
    workers: int = 1,
    scorer: Sandbox | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    prompt_style: str = "stub",
) -> EvalSummary:
    """Solve every (problem, sample) not yet in ``out`` and append its scored record.

    ``scorer`` runs the hidden tests (default: the agent's own sandbox). With ``workers > 1``
    tasks run in threads (:mod:`ragcoder.agent.runner`). ``prompt_style``: see :func:`agent_tasks`.
    ``agent`` may be None when every record is there already.
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    with held(out) as out:
        tasks = agent_tasks(problems, prompt_style)
        plan = plan_eval(problems, samples, out.done)
        if plan.to_solve and agent is None:
            raise ValueError("run_eval: records are missing and no agent was given")
        summary = EvalSummary(to_run=len(plan.jobs), skipped=plan.skipped)
        if on_start is not None:
            on_start(len(plan.jobs), plan.skipped)

        def solve(item: tuple[Problem, int]) -> Outcome:
            problem, sample = item
            result = agent.invoke(tasks[problem.task_id])  # type: ignore[union-attr]
            return record_for(problem, sample, samples, result, scorer or agent.sandbox), None  # type: ignore[union-attr]

        def count(record: dict[str, Any], _: Any) -> None:
            summary.add(record)
            if on_result is not None:
                on_result(record)

        report = run_jobs(
            plan,
            out,
            solve,
            failed=failed_record,
            workers=workers,
            on_record=count,
            thread_name="ragcoder-eval",
        )
        summary.seconds, summary.interrupted = report.seconds, report.interrupted
        return summary


def select_problems(split: str = "dev", limit: int | None = None, tasks: str | None = None) -> list[Problem]:
    """The split's problems; ``tasks`` ("1,5,HumanEval/6") keeps only those, which must be in the split."""
    problems = load_problems(split)
    if tasks:
        wanted = [t.strip() for t in tasks.split(",") if t.strip()]
        ids = [t if t.startswith("HumanEval/") else f"HumanEval/{t}" for t in wanted]
        known = {p.task_id for p in problems}
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(
                f"--tasks: {', '.join(missing)} not in the {split} split; give task numbers of that split"
            )
        problems = [p for p in problems if p.task_id in set(ids)]
        if not problems:
            raise ValueError(f"--tasks {tasks!r} names no task; give task numbers, e.g. 1,5,HumanEval/6")
    return problems[:limit] if limit else problems


def rescore(path: Path, sandbox: Sandbox) -> int:
    """Re-run the hidden tests on every record's attempts in ``path`` (after a scoring change);
    rewrites the file atomically and returns how many final verdicts changed."""
    problems = {p.task_id: p for p in load_problems("all")}
    changed, lines = 0, []
    with ResultsFile.open(path, flag="RESULTS"):  # the lock: no eval may append while it is rewritten
        for record in read_records(path):
            if "error" not in record:
                problem = problems[record["task_id"]]
                for attempt in record["attempts"]:
                    score = score_hidden(sandbox, problem, attempt["code"])
                    attempt["passed"], attempt["hidden_detail"] = score.passed, score.detail
                final = score_hidden(sandbox, problem, record["code"])
                changed += final.passed != record["passed"]
                record["passed"], record["hidden_detail"] = final.passed, final.detail
            lines.append(to_json_line(record))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(lines))
        tmp.replace(path)
    return changed
