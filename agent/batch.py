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

from agent.loop import CodeAgent
from agent.result import AgentResult
from agent.tasks import Task, TaskError


@dataclass
class BatchSummary:
    total: int = 0
    skipped: int = 0  # already in the output file from an earlier run
    passed: int = 0
    failed: int = 0
    errors: int = 0  # bad input lines and tasks that raised
    seconds: float = 0.0
    attempts_histogram: dict[int, int] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.errors


def done_ids(out_path: Path) -> set[str]:
    """Ids already recorded in ``out_path``; a torn last line (killed mid-write) is ignored."""
    ids: set[str] = set()
    if not out_path.exists():
        return ids
    with out_path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and "id" in record:
                ids.add(str(record["id"]))
    return ids


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


def run_batch(
    agent: CodeAgent,
    tasks: Iterable[Task | TaskError],
    out_path: Path,
    *,
    on_result: Callable[[str, AgentResult | None, dict[str, Any]], None] | None = None,
) -> BatchSummary:
    """Run every task not yet in ``out_path``, appending one JSON line per task as it finishes."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _repair_torn_tail(out_path)
    already = done_ids(out_path)
    summary = BatchSummary()
    started = time.perf_counter()
    with out_path.open("a", encoding="utf-8") as handle:
        for index, item in enumerate(tasks, 1):
            summary.total += 1
            task_id = item.id if isinstance(item, Task) else f"error{index}"
            if task_id in already:
                summary.skipped += 1
                continue
            result: AgentResult | None = None
            if isinstance(item, TaskError):
                record: dict[str, Any] = {"id": task_id, "error": str(item)}
                summary.errors += 1
            else:
                try:
                    result = agent.invoke(item)
                except Exception as exc:  # one broken task must not end the run
                    record = {"id": task_id, "error": f"{type(exc).__name__}: {exc}"}
                    summary.errors += 1
                else:
                    record = {"id": task_id, **result.to_dict()}
                    summary.passed += result.passed
                    summary.failed += not result.passed
                    n = len(result.attempts)
                    summary.attempts_histogram[n] = summary.attempts_histogram.get(n, 0) + 1
            append_record(handle, record)
            already.add(task_id)
            if on_result is not None:
                on_result(task_id, result, record)
    summary.seconds = time.perf_counter() - started
    return summary
