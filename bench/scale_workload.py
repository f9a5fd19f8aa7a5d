"""The scale bench's workload: the fixed batch of tasks, one mode's run through the real runners
(``run_batch`` in-process, ``run_batch_on_ray``) as a child process of bench/scale_bench.py runs
it, and the summary of its timings (steady throughput, per-task costs, verdicts and code).

Modes are ``KINDn[t1][pl]``: ``inprocN`` in-process with N workers, ``servedN`` through
``--llm-url``, ``rayN`` on a local Ray with N actors, ``procsN`` N plain in-process runs side by
side; ``t1`` forces one torch thread per worker, ``pl`` sends repairs with ``prompt_lookup``
explicitly.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
TEMPLATES = [  # (name, instruction, tests) over n: trivial functions a 135M model mostly gets right
    (
        "add_{n}",
        "Write a Python function add_{n}(x) that returns x plus {n}.",
        "assert add_{n}(1) == {a}\nassert add_{n}(-{n}) == 0",
    ),
    (
        "times_{n}",
        "Write a Python function times_{n}(x) that returns x multiplied by {n}.",
        "assert times_{n}(3) == {b}\nassert times_{n}(0) == 0",
    ),
    (
        "is_multiple_of_{n}",
        "Write a Python function is_multiple_of_{n}(x) that returns True when x is "
        "divisible by {n}, else False.",
        "assert is_multiple_of_{n}({b}) is True\nassert is_multiple_of_{n}({a}) is False",
    ),
    (
        "repeat_{n}",
        "Write a Python function repeat_{n}(s) that returns the string s repeated {n} times.",
        "assert repeat_{n}('ab') == 'ab' * {n}",
    ),
    (
        "first_{n}",
        "Write a Python function first_{n}(items) that returns a list of the first {n} elements "
        "of the list items.",
        "assert first_{n}(list(range(20))) == list(range({n}))",
    ),
]


def make_tasks(count: int) -> list[Any]:
    from ragcoder.agent.tasks import Task

    tasks = []
    for i in range(count):
        name, instruction, tests = TEMPLATES[i % len(TEMPLATES)]
        n = 2 + i // len(TEMPLATES)
        values = {"n": n, "a": 1 + n, "b": 3 * n}
        tasks.append(
            Task(
                id=name.format(**values),
                instruction=instruction.format(**values),
                tests=tests.format(**values),
            )
        )
    return tasks


# -- one mode, in a child process -----------------------------------------------------------------


def run_mode(
    mode: str,
    count: int,
    attempts: int,
    max_new: int,
    out: Path,
    llm_url: str | None,
    model: str = MODEL,
    shard: tuple[int, int] = (0, 1),
) -> dict:
    """One mode's run, its raw timings: when each task finished, and each record's costs."""
    from ragcoder.agent.config import AgentConfig

    workers = parse_mode(mode)[1]
    # in-process and Ray: this process's own model, never a `ragcoder serve` found on the user's socket
    served = {"server": "off"} if llm_url else {"model": model, "server": "off"}
    config = AgentConfig(
        **served, retrieval="never", max_attempts=attempts, max_new_tokens=max_new, llm_url=llm_url
    )
    index, shards = shard
    tasks = make_tasks(count)[index::shards]
    done_at: list[float] = []

    def on_result(task_id: str, result: Any, record: dict) -> None:
        done_at.append(time.monotonic())  # system-wide on Linux: comparable across the bench's processes

    started = time.monotonic()
    cpu = time.process_time()
    if mode.startswith("ray"):
        from ragcoder.agent.ray_runner import run_batch_on_ray

        summary = run_batch_on_ray(config, tasks, out, address="local", workers=workers, on_result=on_result)
    else:
        from ragcoder.agent.batch import run_batch
        from ragcoder.agent.config import build_agent

        with build_agent(
            config, workers=workers, models=LookupRepairs() if mode.endswith("pl") else None
        ) as agent:
            started, cpu = time.monotonic(), time.process_time()  # in-process: the model is loaded
            summary = run_batch(agent, tasks, out, workers=workers, on_result=on_result)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return {
        "mode": mode,
        "workers": workers,
        "threads": os.environ.get("RAGCODER_NUM_THREADS", ""),
        "errors": summary.errors,
        "started": started,
        "done_at": done_at,
        "process_cpu_s": time.process_time() - cpu,
        "records": [
            {
                "id": r["id"],
                "verdict": "error" if "error" in r else bool(r.get("passed")),
                "code": r.get("code", ""),
                "gen_ms": sum(a["generate_ms"] for a in r.get("attempts", [])),
                "run_ms": sum(a["run_ms"] for a in r.get("attempts", [])),
                "total_ms": r.get("total_ms", 0.0),
                "tokens": r.get("output_tokens", 0),
                "attempts": len(r.get("attempts", [])),
            }
            for r in records
        ],
    }


def parse_mode(mode: str) -> tuple[str, int, bool]:
    """``KINDn[t1][pl]``: the kind (inproc, served, ray, procs), n workers, one torch thread each."""
    import re

    found = re.fullmatch(r"(inproc|served|ray|procs)(\d+)(t1)?(pl)?", mode)
    if found is None:
        raise SystemExit(f"unknown mode {mode!r}: KINDn[t1][pl], KIND one of inproc, served, ray, procs")
    return found.group(1), int(found.group(2)), bool(found.group(3))


class LookupRepairs:
    """build_agent's ``models`` for ``servedNpl``: repairs ask ``ragcoder serve`` for prompt-lookup
    decoding (its ``prompt_lookup`` extension), as the in-process agent decodes them."""

    def __call__(self, chat: Any) -> tuple[Any, Any]:
        from ragcoder.chains.llm.chat_model import DEFAULT_PROMPT_LOOKUP_TOKENS

        return chat, chat.bind(extra_body={"prompt_lookup": DEFAULT_PROMPT_LOOKUP_TOKENS})


def summarize(raw: dict, cpu: dict[str, float] | None = None) -> dict:
    """Steady throughput (completions after the first wave: model loads and Ray's start left out),
    per-task costs, and how busy the workers were in the steady window."""
    done_at, records, workers = sorted(raw["done_at"]), raw["records"], raw["workers"]
    wave = min(workers, len(done_at) - 1)
    window = done_at[-1] - done_at[wave - 1] if wave >= 1 else done_at[-1] - raw["started"]
    steady = (len(done_at) - wave) / window if wave >= 1 else len(done_at) / window
    busy_ms = sum(r["total_ms"] for r in records[wave:])  # records are in finishing order
    return {
        "mode": raw["mode"],
        "workers": workers,
        "threads": raw["threads"],
        "tasks": len(records),
        "errors": raw["errors"],
        "passed": sum(r["verdict"] is True for r in records),
        "steady_tasks_per_s": steady,
        "wall_s": done_at[-1] - raw["started"],
        "first_s": done_at[0] - raw["started"],
        "window_s": window,
        "total_ms": statistics.mean(r["total_ms"] for r in records),
        "gen_ms": statistics.mean(r["gen_ms"] for r in records),
        "run_ms": statistics.mean(r["run_ms"] for r in records),
        "tokens": statistics.mean(r["tokens"] for r in records),
        "attempts": statistics.mean(r["attempts"] for r in records),
        "worker_busy": min(1.0, busy_ms / 1000 / (workers * window)) if window > 0 else 0.0,
        "cpu": cpu or {},
        "verdicts": {r["id"]: r["verdict"] for r in records},
        "codes": {r["id"]: r["code"] for r in records},
    }


def merge(raws: list[dict], mode: str) -> dict:
    """Independent processes run side by side (``procs2t1``) as one mode."""
    return {
        "mode": mode,
        "workers": len(raws),
        "threads": raws[0]["threads"],
        "errors": sum(r["errors"] for r in raws),
        "started": min(r["started"] for r in raws),
        "done_at": sorted(t for r in raws for t in r["done_at"]),
        "process_cpu_s": sum(r["process_cpu_s"] for r in raws),
        "records": [rec for r in raws for rec in r["records"]],
    }
