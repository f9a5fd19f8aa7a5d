"""Batch runs over prompt files: each result is appended (flushed, fsync'd) as it finishes, and a
rerun with the same output file skips the ids already there, so nothing done is lost or repeated."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcoder.agent.loop import CodeAgent
from ragcoder.agent.result import AgentResult
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


def read_records(path: Path, key: str = "id") -> list[dict[str, Any]]:
    """Every complete JSON record with ``key`` in a results file; a torn last line (killed
    mid-write) and other broken lines are skipped. A missing file has none."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and key in record:
                records.append(record)
    return records


def done_ids(out_path: Path) -> set[str]:
    """Ids already recorded in ``out_path`` (see :func:`read_records`)."""
    return {str(record["id"]) for record in read_records(out_path)}


def _repair_torn_tail(out_path: Path) -> None:
    """If the file does not end in a newline (killed mid-line), cut the partial line off."""
    if not out_path.exists() or out_path.stat().st_size == 0:
        return
    with out_path.open("rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        handle.truncate(cut)


def append_record(handle: Any, record: dict[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def _record_for(task: Task, agent: CodeAgent) -> tuple[dict[str, Any], AgentResult | None]:
    try:
        result = agent.invoke(task)
    except Exception as exc:  # one broken task must not end the run
        return {"id": task.id, "error": f"{type(exc).__name__}: {exc}"}, None
    return {"id": task.id, **result.to_dict()}, result


def save_task_outputs(result: AgentResult, out_path: Path, task_id: str) -> list[str]:
    """Save the files the final attempt wrote under ``<results stem>.files/<task id>/``; their paths."""
    import re

    from ragcoder.sandbox.files import save_outputs

    folder = out_path.parent / f"{out_path.stem}.files" / re.sub(r"[^\w.-]", "_", task_id)
    return [str(f.path) for f in save_outputs(result.attempts[-1].result.files, folder)]


def run_batch(
    agent: CodeAgent,
    tasks: Iterable[Task | TaskError],
    out_path: Path,
    *,
    workers: int = 1,
    on_result: Callable[[str, AgentResult | None, dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> BatchSummary:
    """Run every task not yet in ``out_path``, appending one JSON line per task as it finishes.

    With ``workers > 1`` tasks run concurrently in threads (the sandbox pool runs them in
    parallel; a micro-batching model batches their generations). Lines are written only from
    this thread, so a Ctrl-C never leaves half a line; it stops the run and what finished is kept.
    ``on_start(to_do, skipped)`` is called once the file is read.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    out_path.parent.mkdir(parents=True, exist_ok=True)
    _repair_torn_tail(out_path)
    already = done_ids(out_path)
    summary = BatchSummary()
    started = time.perf_counter()
    todo: list[Task | TaskError] = []
    for index, item in enumerate(tasks, 1):
        summary.total += 1
        if isinstance(item, TaskError):
            item.task_id = f"error{index}"  # type: ignore[attr-defined]
        task_id = item.id if isinstance(item, Task) else item.task_id  # type: ignore[attr-defined]
        if task_id in already:
            summary.skipped += 1
        else:
            todo.append(item)
            already.add(task_id)
    if on_start is not None:
        on_start(len(todo), summary.skipped)

    def record(handle: Any, record: dict[str, Any], result: AgentResult | None) -> None:
        if result is not None and result.attempts and result.attempts[-1].result.files:
            record["outputs"] = save_task_outputs(result, out_path, str(record["id"]))
        append_record(handle, record)
        if result is None:
            summary.errors += 1
        else:
            summary.passed += result.passed
            summary.failed += not result.passed
            n = len(result.attempts)
            summary.attempts_histogram[n] = summary.attempts_histogram.get(n, 0) + 1
            summary.output_tokens += result.output_tokens
        if on_result is not None:
            on_result(str(record["id"]), result, record)

    with out_path.open("a", encoding="utf-8") as handle:
        pending: set[Future] = set()
        queue = iter(todo)
        pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ragcoder-batch")
        try:
            for item in queue:
                if isinstance(item, TaskError):
                    record(handle, {"id": item.task_id, "error": str(item)}, None)  # type: ignore[attr-defined]
                    continue
                pending.add(pool.submit(_record_for, item, agent))
                while len(pending) >= max(1, workers):
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        record(handle, *future.result())
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    record(handle, *future.result())
        except KeyboardInterrupt:
            summary.interrupted = True
            for future in pending:
                future.cancel()
        finally:
            pool.shutdown(wait=not summary.interrupted, cancel_futures=True)
    summary.seconds = time.perf_counter() - started
    return summary
