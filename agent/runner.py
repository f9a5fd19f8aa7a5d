"""The concurrent runner behind batch runs and evaluations: jobs in a thread pool, one record each.

Records are written only from the calling thread, whole and fsync'd (:class:`ResultsFile`), so a
Ctrl-C never leaves half a line: it stops the run and what finished is kept. Jobs whose id is
already in the file are skipped, which makes a rerun resume. A job that raises becomes an error
record and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ragcoder.agent.records import ResultsFile

Item = TypeVar("Item")
Outcome = tuple[dict[str, Any], Any]
"""A job's record and a payload for the ``on_record`` callback (e.g. the AgentResult), or None."""


@dataclass(frozen=True)
class Job(Generic[Item]):
    """One line of a results file: ``item`` to solve, or a ``record`` ready to write (a bad input line)."""

    id: str | None  # None: the runner names it error<position>
    item: Item | None = None
    record: dict[str, Any] | None = None


@dataclass
class Plan(Generic[Item]):
    """The jobs still to do (ids final) and how many were skipped as already done."""

    jobs: list[Job[Item]]
    total: int
    skipped: int

    @property
    def to_solve(self) -> int:
        """Jobs that need solving (the others are ready records)."""
        return sum(job.record is None for job in self.jobs)


@dataclass
class RunReport:
    seconds: float = 0.0
    interrupted: bool = False


def plan_jobs(jobs: Iterable[Job[Item]], done: set[str]) -> Plan[Item]:
    """Name id-less jobs ``error<position>`` and leave out those whose id is in ``done`` (or repeated)."""
    seen = set(done)
    todo: list[Job[Item]] = []
    total = 0
    for position, job in enumerate(jobs, 1):
        total += 1
        job_id = job.id if job.id is not None else f"error{position}"
        if job_id in seen:
            continue
        seen.add(job_id)
        todo.append(Job(job_id, job.item, job.record))
    return Plan(todo, total, total - len(todo))


def run_jobs(
    plan: Plan[Item],
    results: ResultsFile,
    solve: Callable[[Item], Outcome],
    *,
    failed: Callable[[Item], dict[str, Any]] | None = None,
    workers: int = 1,
    on_record: Callable[[dict[str, Any], Any], None] | None = None,
    thread_name: str = "ragcoder-run",
) -> RunReport:
    """Solve every job of ``plan`` (``workers`` at a time) and append its record to ``results``.

    ``solve(item)`` runs in a worker thread and returns the record and a payload; if it raises,
    the record is ``{"id": ..., **failed(item), "error": "<Type>: <message>"}``. ``on_record``
    sees each record as written, with its payload (None for errors and ready records).
    """
    report = RunReport()
    started = time.perf_counter()

    def attempt(job: Job[Item]) -> Outcome:
        try:
            record, payload = solve(job.item)  # type: ignore[arg-type]
        except Exception as exc:  # one broken task must not end the run
            extra = failed(job.item) if failed is not None else {}  # type: ignore[arg-type]
            return _with_id(job.id, {**extra, "error": f"{type(exc).__name__}: {exc}"}), None
        return _with_id(job.id, record), payload

    def write(record: dict[str, Any], payload: Any) -> None:
        results.append(record)
        if on_record is not None:
            on_record(record, payload)

    width = max(1, workers)
    pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix=thread_name)
    pending: set[Future[Outcome]] = set()
    try:
        for job in plan.jobs:
            if job.record is not None:
                write(_with_id(job.id, job.record), None)
                continue
            pending.add(pool.submit(attempt, job))
            while len(pending) >= width:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    write(*future.result())
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                write(*future.result())
    except KeyboardInterrupt:
        report.interrupted = True
        for future in pending:
            future.cancel()
    finally:
        pool.shutdown(wait=not report.interrupted, cancel_futures=True)
    report.seconds = time.perf_counter() - started
    return report


def _with_id(job_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the job's id, first (a reader sees which task a line is at a glance)."""
    return {"id": job_id, **{key: value for key, value in record.items() if key != "id"}}
