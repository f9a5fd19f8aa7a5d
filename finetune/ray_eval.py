"""HumanEval runs fanned out on Ray (``ragcoder eval humaneval --ray``): each actor builds its own
agent (sandbox, model or model URL) and scores the hidden tests in its own sandbox; the driver
writes the records exactly as :func:`ragcoder.finetune.evaluate.run_eval` does (one fsync'd line
per (task, sample) through the same ``ResultsFile``, resume by id), so the report reads a Ray
run like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcoder.agent.config import AgentConfig
from ragcoder.agent.ray_runner import DEFAULT_TASK_RETRIES, run_jobs_on_ray
from ragcoder.agent.records import ResultsFile, held
from ragcoder.agent.runner import Outcome
from ragcoder.agent.tasks import Task
from ragcoder.finetune.evaluate import EvalSummary, agent_tasks, failed_record, plan_eval, record_for
from ragcoder.finetune.humaneval import Problem


@dataclass(frozen=True)
class Sampled:
    """build_agent's ``models``: both generation and repair sample at ``temperature`` (pass@k)."""

    temperature: float

    def __call__(self, chat: Any) -> tuple[Any, Any]:
        model = chat.bind(temperature=self.temperature)
        return model, model


@dataclass(frozen=True)
class EvalSolver:
    """Pickled to each actor: its agent, then one scored record per (problem, sample)."""

    config: AgentConfig
    tasks: dict[str, Task]
    samples: int = 1
    temperature: float = 0.8
    quantize: str = "auto"

    def __call__(self) -> Callable[[tuple[Problem, int]], Outcome]:
        from ragcoder.agent.config import build_agent

        models = Sampled(self.temperature) if self.samples > 1 else None
        agent = build_agent(self.config, quantize=self.quantize, models=models)
        return _SolveProblem(agent, self.tasks, self.samples)


class _SolveProblem:
    def __init__(self, agent: Any, tasks: dict[str, Task], samples: int) -> None:
        self.agent, self.tasks, self.samples = agent, tasks, samples

    def __call__(self, item: tuple[Problem, int]) -> Outcome:
        problem, sample = item  # raising: the runner records the error, as run_eval does
        result = self.agent.invoke(self.tasks[problem.task_id])
        return record_for(problem, sample, self.samples, result, self.agent.sandbox), None

    def close(self) -> None:
        self.agent.close()


def run_eval_on_ray(
    config: AgentConfig,
    problems: list[Problem],
    out: Path | ResultsFile,
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
    """``run_eval`` with the problems solved and scored on ``workers`` Ray actors."""
    if samples < 1:
        raise ValueError("samples must be at least 1")
    with held(out) as out:
        plan = plan_eval(problems, samples, out.done)
        summary = EvalSummary(to_run=len(plan.jobs), skipped=plan.skipped)
        if on_start is not None:
            on_start(len(plan.jobs), plan.skipped)

        def count(record: dict[str, Any], _: Any) -> None:
            summary.add(record)
            if on_result is not None:
                on_result(record)

        solver = EvalSolver(config, agent_tasks(problems, prompt_style), samples, temperature, quantize)
        report = run_jobs_on_ray(
            plan,
            out,
            solver,
            address=address,
            workers=workers,
            failed=failed_record,
            on_record=count,
            task_retries=task_retries,
        )
        summary.seconds, summary.interrupted = report.seconds, report.interrupted
        return summary
