"""Batch runs fanned out on Ray: tasks go to Ray actors, each with its own agent (sandbox and model
client, usually the served model's URL), and results stream back to the driver.

Only the driver writes the results file, one whole fsync'd line per task as its result arrives,
so the batch runner's guarantees hold as they are: a rerun after SIGKILL resumes from the file,
no id is written twice, and progress is reported per record. Ray is used as it is meant to be
used (actors, ``ray.wait``), with no scheduler of our own beyond keeping each actor busy:

- :func:`ray_map` is the fan-out: ``(id, item)`` pairs in, ``(id, outcome)`` out as they finish.
  ``make_solver`` (pickled to each actor) builds the per-task callable once per actor.
- An actor that dies mid-task (killed, out of memory, its node lost) is replaced and its task
  is sent to another actor, up to ``task_retries`` times; after that the task's record is an
  error saying so. Nothing is written for a task until its result is back, so a lost task is
  never recorded and a retried one is recorded once.
- An actor whose set-up fails (no model server, no sandbox) ends the run with one line
  (:class:`ragcoder.errors.RayWorkerError`): every other actor would fail the same way.

``ray`` is an optional extra: ``pip install 'ragcoder[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcoder.agent.batch import BatchSummary, plan_batch
from ragcoder.agent.config import AgentConfig
from ragcoder.agent.records import ResultsFile, held
from ragcoder.agent.runner import Outcome, Plan, RunReport
from ragcoder.agent.tasks import Task, TaskError

from ragcoder.errors import ConfigError, RayWorkerError

DEFAULT_TASK_RETRIES = 2  # a task outlives two dead actors; a third death marks it lost
LOCAL_NODE_IP = "127.0.0.2"  # see connect()
OBJECT_STORE_BYTES = 256 << 20  # results are small JSON-able records: no need for Ray's 30% of RAM


@dataclass(frozen=True)
class RayOutcome:
    """What came back for one item: the solver's return value, or why there is none."""

    id: str
    value: Any = None
    error: str | None = None  # the solver raised, or every actor that tried it died
    tries: int = 1  # actors that ran it (more than one after a death)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs the ray package", hint="pip install 'ragcoder[ray]' (about 240 MB installed)"
        ) from None
    return ray


class _Solver:
    """The actor: builds the per-task callable once (in its own process), then solves items."""

    def __init__(self, make_solver: Callable[[], Callable[[Any], Any]], env: dict[str, str]) -> None:
        for name, value in env.items():  # before the solver imports torch: threads, offline hub
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
        self._solve = make_solver()

    def pid(self) -> int:
        return os.getpid()

    def solve(self, item: Any) -> Any:
        return self._solve(item)

    def close(self) -> None:
        close = getattr(self._solve, "close", None)
        if close is not None:
            close()


def connect(address: str, workers: int) -> bool:
    """Join the Ray cluster at ``address`` ("auto", "HOST:PORT", "ray://HOST:PORT"), or start a
    local one for ``"local"``. Returns whether this call started Ray (and so should shut it down).

    Ray advertises a node's network address even when told 127.0.0.1 (it rewrites that one), so a
    local cluster is put on another loopback address (``LOCAL_NODE_IP``): it needs no network, and
    a driver joining a cluster on a loopback address registers there too."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        ray.init(
            num_cpus=max(workers, os.cpu_count() or 1),
            object_store_memory=OBJECT_STORE_BYTES,
            _node_ip_address=os.environ.get("RAGCODER_RAY_NODE_IP", LOCAL_NODE_IP),
            **quiet,
        )
    else:
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if host.startswith("127.") and not address.startswith("ray://"):
            quiet["_node_ip_address"] = host
        if port.isdigit():  # ray.init retries an absent cluster for minutes: ask the port first
            _check_reachable(address, host, int(port))
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayWorkerError(
                f"no Ray cluster answers at {address}: {str(exc).splitlines()[0][:200]}",
                hint="start one with `ray start --head`, or pass --ray local",
            ) from exc
    return True


def _check_reachable(address: str, host: str, port: int, timeout_s: float = 5.0) -> None:
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RayWorkerError(
            f"no Ray cluster answers at {address}: {exc.strerror or type(exc).__name__}",
            hint="start one with `ray start --head`, or pass --ray local",
        ) from None


def actor_env() -> dict[str, str]:
    """The process-wide settings the CLI sets before torch loads, for an actor (a local actor is a
    fresh process that never ran the CLI). An empty value unsets the variable in the actor.

    Torch threads are not shared out among the actors: an actor's model runs on the count that
    model gets in every mode (:mod:`ragcoder.chains.llm.cpu_threads`: 1 for a narrow model, the
    node's cores for a wide one), so an actor computes what in-process and ``ragcoder serve``
    compute. The driver's ``RAGCODER_NUM_THREADS`` / ``OMP_NUM_THREADS`` override that in the
    actors too; the ``OMP_NUM_THREADS`` Ray itself gives an actor (its CPUs, 1) is dropped.
    """
    return {
        "RAGCODER_NUM_THREADS": os.environ.get("RAGCODER_NUM_THREADS", ""),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "HF_HUB_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "TOKENIZERS_PARALLELISM": "false",
    }


@dataclass
class _Pool:
    ray: Any
    make_solver: Callable[[], Callable[[Any], Any]]
    env: dict[str, str]
    cpus: float
    actors: list[Any] = field(default_factory=list)
    started: int = 0
    _actor_class: Any = None

    def add(self) -> Any:
        if self._actor_class is None:  # no restarts by Ray: a dead actor's task is retried here instead
            self._actor_class = self.ray.remote(num_cpus=self.cpus, max_restarts=0, max_task_retries=0)(
                _Solver
            )
        actor = self._actor_class.remote(self.make_solver, self.env)
        self.actors.append(actor)
        self.started += 1
        return actor

    def drop(self, actor: Any) -> None:
        if actor in self.actors:
            self.actors.remove(actor)
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(actor, no_restart=True)

    def close(self) -> None:
        closing = [actor.close.remote() for actor in self.actors]
        if closing:
            with contextlib.suppress(Exception):  # each actor closes its sandbox before it is killed
                self.ray.wait(closing, num_returns=len(closing), timeout=30)
        for actor in list(self.actors):
            self.drop(actor)


def ray_map(
    items: Iterable[tuple[str, Any]],
    make_solver: Callable[[], Callable[[Any], Any]],
    *,
    address: str = "local",
    workers: int = 2,
    cpus_per_actor: float = 1.0,
    task_retries: int = DEFAULT_TASK_RETRIES,
    env: dict[str, str] | None = None,
) -> Iterator[RayOutcome]:
    """Solve every ``(id, item)`` on ``workers`` Ray actors; yield a :class:`RayOutcome` per item as
    it finishes (in finishing order). Closing the generator early (Ctrl-C) stops the actors."""
    ray = _import_ray()
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    started_ray = connect(address, workers)
    if env is None:
        env = actor_env()
    pool = _Pool(ray, make_solver, env, cpus_per_actor)
    queue: list[tuple[str, Any, int]] = [(item_id, item, 1) for item_id, item in items]
    queue.reverse()  # pop() from the end keeps the input order
    running: dict[Any, tuple[str, Any, int, Any]] = {}  # ref -> (id, item, tries, actor)
    try:
        idle = [pool.add() for _ in range(min(max(1, workers), len(queue)))]
        while queue or running:
            while idle and queue:
                actor = idle.pop()
                item_id, item, tries = queue.pop()
                running[actor.solve.remote(item)] = (item_id, item, tries, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            item_id, item, tries, actor = running.pop(ref)
            try:
                value = ray.get(ref)
            except RayTaskError as exc:  # the solver raised: the item's own failure, the actor lives
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                yield RayOutcome(item_id, error=f"{type(cause).__name__}: {_first_line(cause)}", tries=tries)
                idle.append(actor)
                continue
            except (RayActorError, WorkerCrashedError) as exc:
                if getattr(exc, "actor_init_failed", False):
                    raise RayWorkerError(
                        f"a Ray worker could not set up its agent: {_init_cause(exc)}"
                    ) from exc
                pool.drop(actor)
                if tries > task_retries:
                    yield RayOutcome(item_id, error=f"lost: {tries} Ray workers died running it", tries=tries)
                else:
                    queue.append((item_id, item, tries + 1))  # next in line, on another actor
                if queue:
                    idle.append(pool.add())
                continue
            yield RayOutcome(item_id, value=value, tries=tries)
            idle.append(actor)
    finally:  # busy actors are killed at once (Ctrl-C, an error); idle ones close their sandbox first
        for _, _, _, actor in running.values():
            pool.drop(actor)
        pool.close()
        if started_ray:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


def _init_cause(exc: BaseException) -> str:
    """The constructor's own error, from the text Ray wraps it in (the last line naming one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if ":" in line and line.split(":")[0].replace(".", "").isidentifier()]
    return (named[-1] if named else (lines[-1] if lines else type(exc).__name__))[:300]


# -- the runner's shape: plans in, fsync'd records out --------------------------------------------


def run_jobs_on_ray(
    plan: Plan[Any],
    results: ResultsFile,
    make_solve: Callable[[], Callable[[Any], Outcome]],
    *,
    address: str = "local",
    workers: int = 2,
    failed: Callable[[Any], dict[str, Any]] | None = None,
    on_record: Callable[[dict[str, Any], Any], None] | None = None,
    task_retries: int = DEFAULT_TASK_RETRIES,
) -> RunReport:
    """:func:`ragcoder.agent.runner.run_jobs` with the jobs solved on Ray actors.

    ``make_solve()`` runs once in each actor and returns its ``solve(item) -> (record, payload)``.
    Records are appended here, in this process, as results arrive; a job whose solve raised (or
    that every actor died on) gets ``{"id": ..., **failed(item), "error": ...}``, as in run_jobs.
    """
    report = RunReport()
    started = time.perf_counter()

    def write(record: dict[str, Any], payload: Any) -> None:
        written = results.append(record)
        if on_record is not None:
            on_record(written, payload)

    todo = []
    for job in plan.jobs:
        if job.record is not None:
            write(_with_id(job.id, job.record), None)
        else:
            todo.append(job)
    if todo:  # no cluster to start when only ready records were left
        items = {job.id: job.item for job in todo}
        outcomes = ray_map(
            ((job.id, job.item) for job in todo),
            make_solve,
            address=address,
            workers=workers,
            task_retries=task_retries,
        )
        try:
            for outcome in outcomes:
                if outcome.error is not None:
                    extra = failed(items[outcome.id]) if failed is not None else {}
                    write(_with_id(outcome.id, {**extra, "error": outcome.error}), None)
                else:
                    record, payload = outcome.value
                    write(_with_id(outcome.id, record), payload)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            outcomes.close()
    report.seconds = time.perf_counter() - started
    return report


def _with_id(job_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    return {"id": job_id, **{key: value for key, value in record.items() if key != "id"}}


# -- batch runs on Ray ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentSolver:
    """Pickled to each actor: builds its agent from ``config``; solves a task into its batch record."""

    config: AgentConfig
    quantize: str = "auto"

    def __call__(self) -> Callable[[Task], Outcome]:
        from ragcoder.agent.config import build_agent

        return _SolveTask(build_agent(self.config, quantize=self.quantize))


class _SolveTask:
    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def __call__(self, task: Task) -> Outcome:
        result = self.agent.invoke(task)  # raising: the runner records the error, as run_batch does
        return result.to_dict(), result

    def close(self) -> None:
        self.agent.close()


def run_batch_on_ray(
    config: AgentConfig,
    tasks: Iterable[Task | TaskError],
    out: Path | ResultsFile,
    *,
    address: str = "local",
    workers: int = 2,
    quantize: str = "auto",
    on_result: Callable[[str, Any, dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    task_retries: int = DEFAULT_TASK_RETRIES,
) -> BatchSummary:
    """``run_batch`` with the tasks solved on ``workers`` Ray actors: the same file, records and resume."""
    with held(out) as out:
        plan = plan_batch(tasks, out.done)
        summary = BatchSummary(total=plan.total, skipped=plan.skipped)
        if on_start is not None:
            on_start(len(plan.jobs), plan.skipped)

        def count(record: dict[str, Any], result: Any) -> None:
            summary.add(result)
            if on_result is not None:
                on_result(str(record["id"]), result, record)

        report = run_jobs_on_ray(
            plan,
            out,
            AgentSolver(config, quantize),
            address=address,
            workers=workers,
            on_record=count,
            task_retries=task_retries,
        )
        summary.seconds, summary.interrupted = report.seconds, report.interrupted
        return summary
