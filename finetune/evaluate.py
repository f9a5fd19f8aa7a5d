"""The HumanEval harness: the agent solves each problem from its prompt alone; the hidden tests
score the final code (and the code after each attempt) in the sandbox.

One JSON line per (task, sample) is appended and fsync'd as it finishes; a rerun with the same
output file skips what is there (the batch runner's resume rules). ``ragcoder.finetune.report`` turns the
file into pass@k, pass rate by attempt, cost and similarity numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragcoder.agent.batch import append_record, done_ids
from ragcoder.agent.loop import CodeAgent
from ragcoder.agent.result import AgentResult
from ragcoder.agent.tasks import Task, read_humaneval_tasks
from ragcoder.finetune.humaneval import Problem, dataset_path, load_problems, program_for, words_instruction
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


@dataclass(frozen=True)
class HiddenScore:
    passed: bool
    detail: str  # "" when passed, else one line on what failed


PROMPT_STYLES = ("stub", "words")


def agent_tasks(problems: Iterable[Problem], style: str = "stub") -> dict[str, Task]:
    """The agent's view of each problem, built by the agent's own HumanEval reader (prompt only).

    ``style="words"`` asks each task in words instead (``ragcoder.finetune.humaneval.words_instruction``;
    a prompt that cannot be restated keeps its stub).
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r}: choose one of {', '.join(PROMPT_STYLES)}")
    by_id = {p.task_id: p for p in problems}
    tasks: dict[str, Task] = {}
    for item in read_humaneval_tasks(dataset_path()):
        if isinstance(item, Task) and item.id in by_id:
            words = words_instruction(by_id[item.id]) if style == "words" else None
            tasks[item.id] = replace(item, instruction=words) if words else item
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
        attempts.append({
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
        })  # fmt: skip
    final = verdict(result.code)
    reference = problem.canonical_code
    return {
        "id": problem.task_id if samples == 1 else f"{problem.task_id}#{sample}",
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


def _repair_torn_tail(path: Path) -> None:
    """Cut a partial last line (a run killed mid-write) so the next append starts a clean line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with path.open("rb+") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def run_eval(
    agent: CodeAgent,
    problems: list[Problem],
    out_path: Path,
    *,
    samples: int = 1,
    workers: int = 1,
    scorer: Sandbox | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    prompt_style: str = "stub",
) -> EvalSummary:
    """Solve every (problem, sample) not yet in ``out_path`` and append its scored record.

    ``scorer`` runs the hidden tests (default: the agent's own sandbox). With ``workers > 1``
    tasks run in threads; records are written only from this thread. ``prompt_style``: see
    :func:`agent_tasks`.
    """
    if samples < 1:
        raise ValueError("samples must be at least 1")
    scorer = scorer or agent.sandbox
    tasks = agent_tasks(problems, prompt_style)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _repair_torn_tail(out_path)
    already = done_ids(out_path)
    todo: list[tuple[Problem, int]] = []
    summary = EvalSummary()
    for problem in problems:
        for sample in range(samples):
            record_id = problem.task_id if samples == 1 else f"{problem.task_id}#{sample}"
            if record_id in already:
                summary.skipped += 1
            else:
                todo.append((problem, sample))
    summary.to_run = len(todo)
    if on_start is not None:
        on_start(len(todo), summary.skipped)
    started = time.perf_counter()

    def solve(problem: Problem, sample: int) -> dict[str, Any]:
        try:
            result = agent.invoke(tasks[problem.task_id])
        except Exception as exc:  # one broken task must not end the run
            record_id = problem.task_id if samples == 1 else f"{problem.task_id}#{sample}"
            return {"id": record_id, "task_id": problem.task_id, "split": problem.split, "sample": sample,
                    "error": f"{type(exc).__name__}: {exc}", "passed": False}  # fmt: skip
        return record_for(problem, sample, samples, result, scorer)

    def write(handle: Any, record: dict[str, Any]) -> None:
        append_record(handle, record)
        if "error" in record:
            summary.errors += 1
        elif record["passed"]:
            summary.passed += 1
        else:
            summary.failed += 1
        if on_result is not None:
            on_result(record)

    with out_path.open("a", encoding="utf-8") as handle:
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ragcoder-eval")
        pending: set[Future] = set()
        try:
            for problem, sample in todo:
                pending.add(pool.submit(solve, problem, sample))
                while len(pending) >= max(1, workers):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        write(handle, future.result())
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    write(handle, future.result())
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            pool.shutdown(wait=not summary.interrupted, cancel_futures=True)
    summary.seconds = time.perf_counter() - started
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
    return problems[:limit] if limit else problems


def rescore(path: Path, sandbox: Sandbox) -> int:
    """Re-run the hidden tests on every record's attempts in ``path`` (after a scoring change);
    rewrites the file atomically and returns how many final verdicts changed."""
    import json

    from ragcoder.finetune.humaneval import load_problems

    problems = {p.task_id: p for p in load_problems("all")}
    changed, lines = 0, []
    for raw in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(raw)
        if "error" not in record:
            problem = problems[record["task_id"]]
            for attempt in record["attempts"]:
                score = score_hidden(sandbox, problem, attempt["code"])
                attempt["passed"], attempt["hidden_detail"] = score.passed, score.detail
            final = score_hidden(sandbox, problem, record["code"])
            changed += final.passed != record["passed"]
            record["passed"], record["hidden_detail"] = final.passed, final.detail
        lines.append(json.dumps(record, ensure_ascii=False))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return changed
