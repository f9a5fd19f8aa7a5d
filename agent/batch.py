"""Batch runs over prompt files: each result is appended (flushed, fsync'd) as it finishes, and a
rerun with the same output file skips the ids already there, so nothing done is lost or repeated.
The file handling is :mod:`ragcoder.agent.records`, the thread pool :mod:`ragcoder.agent.runner`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcoder.agent.loop import AgentEvent, CodeAgent
from ragcoder.agent.records import ResultsFile, held
from ragcoder.agent.result import AgentResult
from ragcoder.agent.runner import Job, Outcome, Plan, plan_jobs, run_jobs
from ragcoder.agent.tasks import Task, TaskError


@dataclass
class BatchSummary:
    total: int = 0
    skipped: int = 0  # already in the output file from an earlier run
    passed: int = 0
    failed: int = 0
    errors: int = 0  # bad input lines and tasks that raised
    seconds: float = 0.0
    attempts_histogram: dict[int, int] = field(default_factory=dict)
    output_tokens: int = 0
    interrupted: bool = False

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.errors

    def add(self, result: AgentResult | None) -> None:
        """Count one finished task; None: it ended in an error record."""
        if result is None:
            self.errors += 1
            return
        self.passed += result.passed
        self.failed += not result.passed
        n = len(result.attempts)
        self.attempts_histogram[n] = self.attempts_histogram.get(n, 0) + 1
        self.output_tokens += result.output_tokens


def plan_batch(tasks: Iterable[Task | TaskError], done: set[str]) -> Plan[Task]:
    """The tasks not in ``done``; a bad input line (TaskError) or a repeated id becomes an error record."""
    jobs = (
        Job(item.id, item, origin=item.origin)
        if isinstance(item, Task)
        else Job(None, record={"error": str(item)})
        for item in tasks
    )
    return plan_jobs(jobs, done)


def save_task_outputs(result: AgentResult, out_path: Path, task_id: str) -> list[str]:
    """Save the files the final attempt wrote under ``<results stem>.files/<task id>/``; their paths."""
    import re

    from ragcoder.sandbox.files import save_outputs

    folder = out_path.parent / f"{out_path.stem}.files" / re.sub(r"[^\w.-]", "_", task_id)
    return [str(f.path) for f in save_outputs(result.attempts[-1].result.files, folder)]


def run_batch(
    agent: CodeAgent | None,
    tasks: Iterable[Task | TaskError],
    out: Path | ResultsFile,
    *,
    workers: int = 1,
    on_result: Callable[[str, AgentResult | None, dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_step: Callable[[str, AgentEvent], None] | None = None,
) -> BatchSummary:
    """Run every task not yet in ``out``, appending one JSON line per task as it finishes.

    With ``workers > 1`` tasks run concurrently in threads (the sandbox pool runs them in
    parallel; a micro-batching model batches their generations). ``on_start(to_do, skipped)`` is
    called once the file is read. ``agent`` may be None when no task is left to solve (only bad
    input lines to record). ``on_step(task_id, event)`` sees each step of each task (per-attempt
    progress).
    """
    with held(out) as out:
        plan = plan_batch(tasks, out.done)
        if plan.to_solve and agent is None:
            raise ValueError("run_batch: tasks are left to solve and no agent was given")
        summary = BatchSummary(total=plan.total, skipped=plan.skipped)
        if on_start is not None:
            on_start(len(plan.jobs), plan.skipped)

        def solve(task: Task) -> Outcome:
            result = None
            for event in agent.stream(task):  # type: ignore[union-attr]  # the traced run invoke makes
                if on_step is not None:
                    on_step(task.id, event)
                if event.kind == "done":
                    result = event.data["result"]
            assert result is not None  # the loop always ends with done
            record = result.to_dict()
            if result.attempts and result.attempts[-1].result.files:
                record["outputs"] = save_task_outputs(result, out.path, task.id)
            return record, result

        def count(record: dict[str, Any], result: AgentResult | None) -> None:
            summary.add(result)
            if on_result is not None:
                on_result(str(record["id"]), result, record)

        report = run_jobs(plan, out, solve, workers=workers, on_record=count, thread_name="ragcoder-batch")
        summary.seconds, summary.interrupted = report.seconds, report.interrupted
        return summary
