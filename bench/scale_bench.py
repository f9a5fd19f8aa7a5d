"""Past one machine, measured here: the same fixed batch in-process (1/2/4 workers), through a served
model (--llm-url), and on a local Ray instance (1 and 2 actors), side by side in one run.

    flock /tmp/ragcoder-heavy.lock .venv/bin/python bench/scale_bench.py            # 50 tasks, all modes
    .venv/bin/python bench/scale_bench.py --tasks 10 --modes inproc1,ray2             # a quick look

Every mode runs in a fresh process (its own model load) over the same tasks, model (SmolLM2-135M,
fp32, greedy), sandbox (Docker when it answers) and attempts; results go to real JSONL files
through the real runners (``run_batch``, ``run_batch_on_ray``). Printed per mode: steady
throughput (completions after the first wave, so model loads and Ray start-up are left out),
wall time, per-task costs (generation and sandbox ms, tokens), and whether ids and verdicts match
the in-process single-worker run. Then the fan-out's own ceiling: Ray round trips of a no-op task
and the driver's fsync'd append per record, which bound what N machines can give (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m-instruct"
MODES = ("inproc1", "served1", "ray1", "ray2", "inproc2", "inproc4", "served2")  # the target's three first
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
    mode: str, count: int, attempts: int, max_new: int, out: Path, llm_url: str | None, model: str = MODEL
) -> dict:
    from ragcoder.agent.config import AgentConfig

    workers = int(mode[-1])
    served = {} if llm_url else {"model": model}  # through the URL: the server's one model
    config = AgentConfig(
        **served, retrieval="never", max_attempts=attempts, max_new_tokens=max_new, llm_url=llm_url
    )
    tasks = make_tasks(count)
    done_at: list[float] = []

    def on_result(task_id: str, result: Any, record: dict) -> None:
        done_at.append(time.perf_counter())

    started = time.perf_counter()
    if mode.startswith("ray"):
        from ragcoder.agent.ray_runner import run_batch_on_ray

        summary = run_batch_on_ray(config, tasks, out, address="local", workers=workers, on_result=on_result)
    else:
        from ragcoder.agent.batch import run_batch
        from ragcoder.agent.config import build_agent

        with build_agent(config, workers=workers) as agent:
            started = time.perf_counter()  # in-process: the model is loaded; Ray's wall includes its start
            summary = run_batch(agent, tasks, out, workers=workers, on_result=on_result)
    wave = min(workers, len(done_at) - 1)
    steady = (
        (len(done_at) - wave) / (done_at[-1] - done_at[wave - 1])
        if wave >= 1
        else len(done_at) / (done_at[-1] - started)
    )
    records = [json.loads(line) for line in out.read_text().splitlines()]
    gen = [sum(a["generate_ms"] for a in r.get("attempts", [])) for r in records]
    run = [sum(a["run_ms"] for a in r.get("attempts", [])) for r in records]
    return {
        "mode": mode,
        "workers": workers,
        "tasks": len(records),
        "errors": summary.errors,
        "passed": summary.passed,
        "steady_tasks_per_s": steady,
        "wall_s": done_at[-1] - started,
        "gen_ms": statistics.mean(gen),
        "run_ms": statistics.mean(run),
        "tokens": statistics.mean(r.get("output_tokens", 0) for r in records),
        "attempts": statistics.mean(len(r.get("attempts", [])) for r in records),
        "verdicts": {r["id"]: "error" if "error" in r else bool(r.get("passed")) for r in records},
        "codes": {r["id"]: r.get("code", "") for r in records},
    }


def fanout_ceiling(tasks: int = 200) -> dict:
    """Ray no-op round trips on 2 local actors, and the driver's fsync'd append of a typical record."""
    from ragcoder.agent.ray_runner import ray_map
    from ragcoder.agent.records import ResultsFile

    record = {"code": "def f(x):\n    return x + 1\n" * 4, "attempts": [{"feedback": "y" * 400}] * 2}
    with tempfile.TemporaryDirectory() as folder, ResultsFile.open(Path(folder) / "r.jsonl") as results:
        started = time.perf_counter()
        for i in range(200):
            results.append({"id": str(i), **record})
        append_ms = (time.perf_counter() - started) / 200 * 1000
    outcomes = ray_map(((str(i), i) for i in range(tasks)), _Noop(), address="local", workers=2)
    first = next(outcomes)
    started = time.perf_counter()
    rest = sum(1 for _ in outcomes)
    ray_ms = (time.perf_counter() - started) / rest * 1000
    assert first.error is None and rest == tasks - 1
    return {"append_ms": append_ms, "ray_noop_ms": ray_ms}


class _Noop:
    def __call__(self) -> Any:
        return _identity


def _identity(item: Any) -> Any:
    return item


# -- the driver -------------------------------------------------------------------------------------


def start_server(max_batch: int, max_new: int, log: Path, model: str = MODEL) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests/scale/openai_server.py"),
            "--model",
            model,
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--max-new-tokens",
            str(max_new),
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2):
                return server, url
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(log.read_text()[-2000:]) from None
            time.sleep(0.5)
    server.kill()
    raise TimeoutError("the model server did not start")


def child(mode: str, args: argparse.Namespace, folder: Path, llm_url: str | None = None) -> dict:
    out = folder / f"{mode}.jsonl"
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--tasks",
        str(args.tasks),
        "--attempts",
        str(args.attempts),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--out",
        str(out),
        "--model",
        args.model,
    ]
    if llm_url:
        command += ["--llm-url", llm_url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--attempts", type=int, default=2, help="1 generation + repairs")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--model", default=MODEL, help="Another model (e.g. a tiny random one: plumbing only)."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write every row here.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--llm-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = run_mode(
            args.child, args.tasks, args.attempts, args.max_new_tokens, args.out, args.llm_url, args.model
        )
        print(json.dumps(row))
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"scale bench: {args.tasks} tasks, {args.model} fp32 greedy, attempts {args.attempts}, "
        f"max_new_tokens {args.max_new_tokens}, {os.cpu_count()} cores",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="ragcoder-scale-bench-"))
    rows = []
    for mode in modes:
        started = time.perf_counter()
        if mode.startswith("served"):
            server, url = start_server(
                int(mode[-1]), args.max_new_tokens, folder / f"{mode}-server.log", args.model
            )
            try:
                row = child(mode, args, folder, url)
            finally:
                server.terminate()
                server.wait(30)
        else:
            row = child(mode, args, folder)
        row["process_s"] = time.perf_counter() - started
        rows.append(row)
        print(
            f"  {mode:<8} {row['steady_tasks_per_s'] * 60:6.1f} tasks/min steady  wall {row['wall_s']:6.1f} s"
            f"  (process {row['process_s']:5.1f} s)  passed {row['passed']}/{row['tasks']}  errors "
            f"{row['errors']}  gen {row['gen_ms']:6.0f} ms  sandbox {row['run_ms']:4.0f} ms  "
            f"{row['tokens']:.0f} tok/task",
            flush=True,
        )
    base = next((r for r in rows if r["mode"] == "inproc1"), rows[0])
    print(f"\nratios against {base['mode']} (steady tasks/s), and same ids/verdicts/code as it:")
    for row in rows:
        same_ids = row["verdicts"].keys() == base["verdicts"].keys()
        same_verdicts = row["verdicts"] == base["verdicts"]
        differ = sorted(k for k in base["verdicts"] if row["verdicts"].get(k) != base["verdicts"][k])
        same_code = sum(row["codes"].get(k) == c for k, c in base["codes"].items())
        print(
            f"  {row['mode']:<8} x{row['steady_tasks_per_s'] / base['steady_tasks_per_s']:.2f}  ids "
            f"{'same' if same_ids else 'DIFFER'}  verdicts {'same' if same_verdicts else 'differ: ' + ', '.join(differ)}"
            f"  code identical {same_code}/{len(base['codes'])}"
        )
    if any(r["mode"] == "ray1" for r in rows) and any(r["mode"] == "ray2" for r in rows):
        one, two = (next(r for r in rows if r["mode"] == m) for m in ("ray1", "ray2"))
        print(f"  ray2 / ray1 = x{two['steady_tasks_per_s'] / one['steady_tasks_per_s']:.2f} (target >= 1.6)")
    ceiling = fanout_ceiling()
    print(
        f"\nfan-out ceiling: Ray no-op round trip {ceiling['ray_noop_ms']:.2f} ms/task on 2 actors; "
        f"driver fsync'd append {ceiling['append_ms']:.2f} ms/record"
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "ceiling": ceiling}, indent=1))


if __name__ == "__main__":
    main()
