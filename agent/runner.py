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
from ragcoder.agent.tasks import clean_text

Item = TypeVar("Item")
Outcome = tuple[dict[str, Any], Any]
"""A job's record and a payload for the ``on_record`` callback (e.g. the AgentResult), or None."""


@dataclass(frozen=True)
class Job(Generic[Item]):
    """One line of a results file: ``item`` to solve, or a ``record`` ready to write (a bad input line)."""

    id: str | None  # None: the runner names it error<position>, an id no other job has
    item: Item | None = None
    record: dict[str, Any] | None = None
    origin: str = ""  # where the job came from ("p.jsonl:3"), for messages; default "task <position>"


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
    """Make every id final and unique, and leave out the jobs whose id is in ``done``.

    Ids are cleaned (``tasks.clean_text``: a lone surrogate would make the line unwritable). A job
    repeating an earlier job's id becomes an error record naming where both came from. Id-less
    jobs (and those repeats) are named ``error<position>``, with a ``-2``, ``-3``... added while
    that is some other job's id, so a generated id never hides a task.
    """
    given = list(jobs)
    ids = [None if job.id is None else clean_text(str(job.id)) for job in given]
    taken = {job_id for job_id in ids if job_id is not None}

    def generated(position: int) -> str:
        name, n = f"error{position}", 1
        while name in taken:
            n += 1
            name = f"error{position}-{n}"
        taken.add(name)
        return name

    first_seen: dict[str, str] = {}
    todo: list[Job[Item]] = []
    for position, (job, job_id) in enumerate(zip(given, ids, strict=True), 1):
        origin = job.origin or f"task {position}"
        if job_id is not None and job_id in first_seen:
            message = (
                f"duplicate id {job_id!r} at {origin}: {first_seen[job_id]} has it already; "
                "give every task its own id"
            )
            job, job_id = Job(None, record={"error": message}, origin=origin), None
        elif job_id is not None:
            first_seen[job_id] = origin
        job_id = job_id if job_id is not None else generated(position)
        if job_id not in done:
            todo.append(Job(job_id, job.item, job.record, origin))
    return Plan(todo, len(given), len(given) - len(todo))


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
    sees each record as written (cleaned), with its payload (None for errors and ready records).
    """
    report = RunReport()
    started = time.perf_counter()

    def attempt(job: Job[Item]) -> Outcome:
        try:
            record, payload = solve(job.item)  # type: ignore[arg-type]
        except Exception as exc:  # one broken task must not end the run
            extra = failed(job.item) if failed is not None else {}  # type: ignore[arg-type]
            return _with_id(job.id, {**extra, "error": _describe(exc)}), None
        return _with_id(job.id, record), payload

    def write(record: dict[str, Any], payload: Any) -> None:
        written = results.append(record)
        if on_record is not None:
            on_record(written, payload)

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


def _describe(exc: Exception) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails must still leave a record
        return f"{type(exc).__name__} (its message could not be read)"
