"""Batch throughput: --workers 1 vs 2, and batched vs unbatched generation, side by side in one run.

    .venv/bin/python bench/batch_bench.py                      # SmolLM2-135M (fp32), 20 tasks
    .venv/bin/python bench/batch_bench.py --model qwen2.5-coder-1.5b-instruct --tasks 8

Every configuration runs the same tasks with the same model and sandbox settings through
`ragcoder.agent.batch.run_batch`, writing real result files. Prints tasks/min per configuration and the
ratios against the sequential run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragcoder.agent.batch import run_batch
from ragcoder.agent.loop import CodeAgent
from ragcoder.agent.microbatch import MicroBatchingChatModel
from ragcoder.agent.tasks import Task

OPS = [("add", "+"), ("sub", "-"), ("mul", "*"), ("maxof", "max"), ("minof", "min")]


def make_tasks(n: int) -> list[Task]:
    tasks = []
    for i in range(n):
        name, op = OPS[i % len(OPS)]
        name = f"{name}{i}"
        expr = f"{op}(a, b)" if op.isalpha() else f"a {op} b"
        expected = eval(expr, {"a": 7, "b": i})  # our own constant expressions
        tasks.append(
            Task(
                id=f"t{i}",
                instruction=f"Write a Python function {name}(a, b) that returns {expr}.",
                tests=f"assert {name}(7, {i}) == {expected}",
            )
        )
    return tasks


def run_config(label: str, model, sandbox, tasks: list[Task], workers: int, attempts: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="ragcoder-batch-bench-")) / "results.jsonl"
    agent = CodeAgent(model, sandbox, max_attempts=attempts)
    started = time.perf_counter()
    summary = run_batch(agent, tasks, out, workers=workers)
    seconds = time.perf_counter() - started
    row = {
        "config": label,
        "workers": workers,
        "seconds": seconds,
        "tasks_per_min": 60 * len(tasks) / seconds,
        "passed": summary.passed,
        "errors": summary.errors,
        "tokens": summary.output_tokens,
    }
    print(
        f"  {label:<28} {seconds:7.1f} s  {row['tasks_per_min']:6.1f} tasks/min  "
        f"passed {summary.passed}/{len(tasks)}  errors {summary.errors}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--attempts", type=int, default=1, help="1 = generation throughput only")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--sandbox", default="docker")
    args = parser.parse_args()

    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.sandbox import open_sandbox

    tasks = make_tasks(args.tasks)
    model = load_chat_model(args.model, max_new_tokens=args.max_new_tokens)
    model.invoke("warm up")  # load and first-call costs stay out of the timings
    print(
        f"model {args.model}, {len(tasks)} tasks, {args.attempts} attempt(s), "
        f"max_new_tokens {args.max_new_tokens}, sandbox {args.sandbox}, {os.cpu_count()} CPUs"
    )
    rows = []
    with open_sandbox(args.sandbox, pool_size=2) as sandbox:
        rows.append(run_config("workers 1 (sequential)", model, sandbox, tasks, 1, args.attempts))
        rows.append(run_config("workers 2, unbatched", model, sandbox, tasks, 2, args.attempts))
        batched = MicroBatchingChatModel(inner=model, max_batch=2)
        rows.append(run_config("workers 2, batched gen", batched, sandbox, tasks, 2, args.attempts))
        batched4 = MicroBatchingChatModel(inner=model, max_batch=4)
        rows.append(run_config("workers 4, batched gen", batched4, sandbox, tasks, 4, args.attempts))
    base = rows[0]["tasks_per_min"]
    print("\nratios (tasks/min vs workers 1):")
    for row in rows[1:]:
        print(f"  {row['config']:<28} {row['tasks_per_min'] / base:5.2f}x")
    print(f"  batched vs unbatched at workers 2: {rows[2]['tasks_per_min'] / rows[1]['tasks_per_min']:5.2f}x")


if __name__ == "__main__":
    main()
