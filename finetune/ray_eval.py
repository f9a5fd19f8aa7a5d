"""HumanEval runs fanned out on Ray (``ragcoder eval humaneval --ray``): each actor builds its own
agent (sandbox, model or model URL) and scores the hidden tests in its own sandbox; the driver
writes the records exactly as :func:`ragcoder.finetune.evaluate.run_eval` does (one fsync'd line
per (task, sample), resume by id), so the report reads a Ray run like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcoder.agent.batch import append_record, done_ids
from ragcoder.agent.config import AgentConfig
from ragcoder.agent.ray_runner import DEFAULT_TASK_RETRIES, ray_map
from ragcoder.agent.tasks import Task
from ragcoder.finetune.evaluate import EvalSummary, _repair_torn_tail, agent_tasks, record_for
from ragcoder.finetune.humaneval import Problem

Item = tuple[Problem, int, Task]


@dataclass(frozen=True)
class Sampled:
    """build_agent's ``models``: both generation and repair sample at ``temperature`` (pass@k)."""

    temperature: float

    def __call__(self, chat: Any) -> tuple[Any, Any]:
        model = chat.bind(temperature=self.temperature)
        return model, model


@dataclass(frozen=True)
class EvalSolver:
    """Pickled to each actor: its agent, then one scored record per (problem, sample, task)."""

    config: AgentConfig
    samples: int = 1
    temperature: float = 0.8
    quantize: str = "auto"

    def __call__(self) -> Callable[[Item], dict[str, Any]]:
        from ragcoder.agent.config import build_agent

        models = Sampled(self.temperature) if self.samples > 1 else None
        return _SolveProblem(build_agent(self.config, quantize=self.quantize, models=models), self.samples)


class _SolveProblem:
    def __init__(self, agent: Any, samples: int) -> None:
        self.agent, self.samples = agent, samples

    def __call__(self, item: Item) -> dict[str, Any]:
        problem, sample, task = item
        try:
            result = self.agent.invoke(task)
        except Exception as exc:  # one broken task must not end the run (as in run_eval)
            return _error_record(problem, sample, self.samples, f"{type(exc).__name__}: {exc}")
        return record_for(problem, sample, self.samples, result, self.agent.sandbox)

    def close(self) -> None:
        self.agent.close()


def _record_id(problem: Problem, sample: int, samples: int) -> str:
    return problem.task_id if samples == 1 else f"{problem.task_id}#{sample}"


def _error_record(problem: Problem, sample: int, samples: int, error: str) -> dict[str, Any]:
    return {"id": _record_id(problem, sample, samples), "task_id": problem.task_id, "split": problem.split,
            "sample": sample, "error": error, "passed": False}  # fmt: skip


def run_eval_on_ray(
    config: AgentConfig,
    problems: list[Problem],
    out_path: Path,
    *,
    address: str = "local",
    workers: int = 2,
    samples: int = 1,
    temperature: float = 0.8,
    quantize: str = "auto",
    prompt_style: str = "stub",
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    task_retries: int = DEFAULT_TASK_RETRIES,
) -> EvalSummary:
    """``run_eval`` with the problems solved and scored on Ray actors."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    tasks = agent_tasks(problems, prompt_style)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _repair_torn_tail(out_path)
    already = done_ids(out_path)
    summary = EvalSummary()
    todo: list[tuple[str, Item]] = []
    for problem in problems:
        for sample in range(samples):
            record_id = _record_id(problem, sample, samples)
            if record_id in already:
                summary.skipped += 1
            else:
                todo.append((record_id, (problem, sample, tasks[problem.task_id])))
    summary.to_run = len(todo)
    if on_start is not None:
        on_start(len(todo), summary.skipped)
    started = time.perf_counter()
    if not todo:  # all done already (a resumed run): no cluster to start
        return summary
    items = {record_id: item for record_id, item in todo}
    solver = EvalSolver(config, samples, temperature, quantize)
    outcomes = ray_map(todo, solver, address=address, workers=workers, task_retries=task_retries)
    with out_path.open("a", encoding="utf-8") as handle:
        try:
            for outcome in outcomes:
                if outcome.error is not None:
                    problem, sample, _ = items[outcome.id]
                    record = _error_record(problem, sample, samples, outcome.error)
                else:
                    record = outcome.value
                append_record(handle, record)
                if "error" in record:
                    summary.errors += 1
                elif record["passed"]:
                    summary.passed += 1
                else:
                    summary.failed += 1
                if on_result is not None:
                    on_result(record)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            outcomes.close()
    summary.seconds = time.perf_counter() - started
    return summary
