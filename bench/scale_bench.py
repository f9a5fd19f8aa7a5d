"""Past one machine, measured here: the same fixed batch in-process (1/2/4 workers), through a served
model (--llm-url), and on a local Ray instance (1 and 2 actors), side by side in one run.

    flock /tmp/ragcoder-heavy.lock .venv/bin/python bench/scale_bench.py            # 50 tasks, the default modes
    .venv/bin/python bench/scale_bench.py --tasks 10 --modes inproc1,ray2             # a quick look

Every mode runs in a fresh process (its own model load) over the same tasks, model (SmolLM2-135M,
int8 dynamic as ``quantize=auto`` gives on CPU, greedy), sandbox (Docker when it answers) and
attempts; results go to real JSONL files through the real runners (bench/scale_workload.py holds
the tasks and one mode's run). Printed per mode: steady throughput (completions after the first
wave, so model loads and Ray start-up are left out), wall time, per-task costs (generation and
sandbox ms, tokens), and whether ids, verdicts and code match the in-process single-worker run;
while a mode runs, which processes kept the cores busy (/proc, once a second). Then the fan-out's
own ceiling: Ray round trips of a no-op task and the driver's fsync'd append per record, which
bound what N machines can give (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench.scale_workload import MODEL, merge, parse_mode, run_mode, summarize  # noqa: E402

# the target's three modes, then 2 Ray workers against 1, and 2 workers without Ray
MODES = ("inproc1", "served1", "ray1", "ray2", "procs2t1")


# -- where the CPU went: every process's CPU time, sampled while a mode runs -----------------------

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = (  # the first that matches a command line names its group
    ("ray actors", ("ray::_Solver", "ray::_Noop")),
    ("ray daemons", ("raylet", "gcs_server", "/ray/", "ray::", "ray_")),
    ("docker + sandbox", ("dockerd", "containerd", "ragcoder-server", "runc")),
)


class CpuSampler:
    """Samples /proc once a second: CPU seconds per group of processes, and the machine's busy time.
    The bench's own children (the driver, or the in-process model) are their own group."""

    def __init__(self) -> None:
        import threading

        self.mine: set[int] = set()  # pids of the mode's processes (the driver / in-process model)
        self.server: set[int] = set()  # a model server's pid
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds when last seen (kept once it is gone)
        self._groups: dict[int, str] = {}
        self.snapshots: list[tuple[float, dict[int, float], float]] = []  # (when, per pid, machine busy)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _group(self, pid: int) -> str:
        if pid in self.mine:
            return "driver / in-process model"
        if pid in self.server:
            return "model server"
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "other"
        return next((name for name, marks in GROUPS if any(m in command for m in marks)), "other")

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            pid = int(entry.name)
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            self._cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
            group = self._group(pid)  # asked each time: a Ray worker renames itself when it becomes an actor
            if group != "other" or pid not in self._groups:  # a name read mid-rename stays what it was
                self._groups[pid] = group
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:8]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait
        self.snapshots.append((now, dict(self._cpu), busy))

    def between(self, start: float, end: float) -> dict[str, float]:
        """Each group's share of the machine's cores over [start, end] (1.0 = one core all along):
        each process's CPU seconds in the span, counted in the group it belongs to at the end."""
        before = max(
            (s for s in self.snapshots if s[0] <= start), default=self.snapshots[0], key=lambda s: s[0]
        )
        after = min(
            (s for s in self.snapshots if s[0] >= end), default=self.snapshots[-1], key=lambda s: s[0]
        )
        span = max(1e-9, after[0] - before[0])
        shares: dict[str, float] = {}
        for pid, seconds in after[1].items():
            group = self._groups.get(pid, "other")
            shares[group] = shares.get(group, 0.0) + (seconds - before[1].get(pid, 0.0)) / span
        known = sum(v for g, v in shares.items() if g != "other")
        shares["machine busy"] = (after[2] - before[2]) / span
        shares["other"] = max(0.0, shares["machine busy"] - known)  # other users of the machine
        return {g: round(v, 2) for g, v in shares.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


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
    """``ragcoder serve`` on a free TCP port of 127.0.0.1 (no unix socket: nothing else finds it)."""
    import re

    command = [str(Path(sys.executable).with_name("ragcoder")), "serve", "--model", model, "--no-socket"]
    command += ["--port", "0", "--max-batch", str(max_batch), "--max-new-tokens", str(max_new)]
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:\d+/v1", log.read_text())
        if found:
            with urllib.request.urlopen(f"{found.group(0)}/models", timeout=5):
                return server, found.group(0)
        if server.poll() is not None:
            raise RuntimeError(log.read_text()[-2000:])
        time.sleep(0.5)
    server.kill()
    raise TimeoutError("ragcoder serve did not start")


def spawn(
    mode: str, args: argparse.Namespace, out: Path, llm_url: str | None, shard: str, threads: str | None
):
    command = [sys.executable, __file__, "--child", mode, "--tasks", str(args.tasks), "--shard", shard]
    command += ["--attempts", str(args.attempts), "--max-new-tokens", str(args.max_new_tokens)]
    command += ["--out", str(out), "--model", args.model] + (["--llm-url", llm_url] if llm_url else [])
    env = dict(os.environ)
    if threads:
        env["RAGCODER_NUM_THREADS"] = threads
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(mode: str, process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def run(mode: str, args: argparse.Namespace, folder: Path, sampler: CpuSampler) -> dict:
    """``MODEn``: n workers, each model on its own torch thread count (the runners' default,
    chains/llm/cpu_threads.py); ``MODEnt1``: one thread per worker whatever the model;
    ``procs2t1``: two independent 1-thread in-process runs, half the tasks each."""
    kind, count, one_thread = parse_mode(mode)
    threads = "1" if one_thread else None
    if kind == "procs":
        shards = [
            spawn("inproc1t1", args, folder / f"{mode}-{i}.jsonl", None, f"{i}/{count}", threads)
            for i in range(count)
        ]
        sampler.mine.update(p.pid for p in shards)
        raw = merge([finish(mode, p) for p in shards], mode)
    elif kind == "served":
        # the in-process model's batch size, not the worker count: a task's sampled rows are one
        # batch either way (row i samples with seed + i in any batch)
        server, url = start_server(8, args.max_new_tokens, folder / f"{mode}-server.log", args.model)
        sampler.server.add(server.pid)
        try:
            child = spawn(mode, args, folder / f"{mode}.jsonl", url, "0/1", threads)
            sampler.mine.add(child.pid)
            raw = finish(mode, child)
        finally:
            server.terminate()
            server.wait(30)
    else:
        child = spawn(mode, args, folder / f"{mode}.jsonl", None, "0/1", threads)
        sampler.mine.add(child.pid)
        raw = finish(mode, child)
    sampler.sample()
    done = sorted(raw["done_at"])
    wave = min(raw["workers"], len(done) - 1)
    cpu = sampler.between(done[wave - 1] if wave >= 1 else raw["started"], done[-1])
    sampler.mine.clear()
    sampler.server.clear()
    return summarize(raw, cpu)


def report(rows: list[dict]) -> None:
    base = next((r for r in rows if r["mode"] == "inproc1"), rows[0])
    print(f"\nratios against {base['mode']} (steady tasks/s), and same ids/verdicts/code as it:")
    for row in rows:
        same_ids = row["verdicts"].keys() == base["verdicts"].keys()
        differ = sorted(k for k in base["verdicts"] if row["verdicts"].get(k) != base["verdicts"][k])
        same_code = sum(row["codes"].get(k) == c for k, c in base["codes"].items())
        print(
            f"  {row['mode']:<9} x{row['steady_tasks_per_s'] / base['steady_tasks_per_s']:.2f}  ids "
            f"{'same' if same_ids else 'DIFFER'}  verdicts "
            f"{'same' if not differ else 'differ: ' + ', '.join(differ)}"
            f"  code identical {same_code}/{len(base['codes'])}"
        )
    by_mode = {r["mode"]: r for r in rows}
    for two, one in (
        ("ray2", "ray1"),
        ("ray2t1", "ray1t1"),
        ("procs2t1", "inproc1t1"),
        ("ray2t1", "procs2t1"),
    ):
        if two in by_mode and one in by_mode:
            ratio = by_mode[two]["steady_tasks_per_s"] / by_mode[one]["steady_tasks_per_s"]
            print(f"  {two} / {one} = x{ratio:.2f}")
    print("\nwhere the cores went in each steady window (cores busy on average; 2 = the whole machine):")
    for row in rows:
        shares = "  ".join(f"{g} {v:.2f}" for g, v in row["cpu"].items() if v >= 0.01)
        print(f"  {row['mode']:<9} {shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--attempts", type=int, default=2, help="1 generation + repairs")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--model", default=MODEL, help="Another model (e.g. a tiny random one: plumbing only)."
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="Keep every mode's row here; modes already in it are not run again (split a long run).",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="Skip the Ray round-trip measure.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--llm-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        index, count = (int(v) for v in args.shard.split("/"))
        raw = run_mode(
            args.child,
            args.tasks,
            args.attempts,
            args.max_new_tokens,
            args.out,
            args.llm_url,
            args.model,
            (index, count),
        )
        print(json.dumps(raw))
        return

    stored = json.loads(args.json.read_text()) if args.json and args.json.exists() else {"rows": []}
    rows = stored["rows"]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"scale bench: {args.tasks} tasks, {args.model} (torch int8, greedy), attempts {args.attempts}, "
        f"max_new_tokens {args.max_new_tokens}, {os.cpu_count()} cores",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="ragcoder-scale-bench-"))
    sampler = CpuSampler()
    for row in rows:
        print(f"  {row['mode']:<9} (from {args.json}, {row.get('at', '')})")
    for mode in modes:
        if any(r["mode"] == mode for r in rows):
            continue
        row = run(mode, args, folder, sampler)
        row["at"] = time.strftime("%Y-%m-%d %H:%M")
        rows.append(row)
        print(
            f"  {mode:<9} {row['steady_tasks_per_s'] * 60:6.1f} tasks/min steady  wall {row['wall_s']:6.1f} s"
            f"  first {row['first_s']:5.1f} s  passed {row['passed']}/{row['tasks']}  errors {row['errors']}"
            f"  task {row['total_ms']:6.0f} ms (gen {row['gen_ms']:6.0f}, sandbox {row['run_ms']:4.0f})"
            f"  {row['tokens']:.0f} tok/task  workers busy {row['worker_busy']:.0%}  threads "
            f"{row['threads'] or 'per model'}",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps(stored, indent=1))
    sampler.close()
    report(rows)
    if not args.no_ceiling:
        ceiling = fanout_ceiling()
        print(
            f"\nfan-out ceiling: Ray no-op round trip {ceiling['ray_noop_ms']:.2f} ms/task on 2 actors; "
            f"driver fsync'd append {ceiling['append_ms']:.2f} ms/record"
        )


if __name__ == "__main__":
    main()
