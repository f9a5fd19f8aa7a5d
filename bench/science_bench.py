"""Scientific-image latency, side by side in one run: a run that imports pandas and plots.

    python bench/science_bench.py [--runs 50] [--json out.json] [--against TAG] [--breakdown]

Ways compared (same code, same image, same minute):
  docker exec    `exec_run` of `python3 -I -c CODE` into one warm hardened container of the
                 scientific image (how peers run code): each run starts Python and imports
                 pandas and matplotlib
  warm pool      our sandbox (ImageRouter pinned to the scientific image -> DockerSandbox): the
                 server imported and exercised numpy, pandas and pyplot once before forking, so
                 the run is a fork of a warm process
Workloads: "pandas + plot" (a DataFrame, a histogram, savefig to PNG: the file must come back)
and "pandas only" (a DataFrame, a group-by, describe()). Each run also prints its own CPU time,
which swings far less with the host's load than wall time does. Targets: warm pool p50 <= 30 ms for the plot
run, and >= 10x faster than docker exec. Also printed: how long a scientific server takes to
start (container + preload), which a run pays only when no warm server is ready.

    --against TAG   also a warm pool on image TAG (say, the scientific image built from an older
                    tree and tagged), its runs interleaved with ours: before and after in one run
    --breakdown     also where a forked plot run's CPU goes, phase by phase, in each image
                    (bench/science_breakdown.py, run inside a hardened container of the image)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragcoder.sandbox import SandboxSettings
from ragcoder.sandbox.profiles import SCIENTIFIC
from ragcoder.sandbox.routing import ImageRouter
from ragcoder.sandbox.settings import SANDBOX_UID

PLOT = """
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt

df = pd.DataFrame({"x": np.random.default_rng(0).normal(size=500)})
df.x.plot.hist(bins=20, title="x")
plt.savefig("hist.png")
print("mean", round(float(df.x.mean()), 3))
"""
PANDAS = """
import pandas as pd

df = pd.DataFrame({"city": ["Oslo", "Rome", "Lima"] * 10, "temp": list(range(30))})
print("mean", df.groupby("city").temp.mean().round(1).to_dict(), df.temp.describe()["max"])
"""
# Appended to each workload: the run's own CPU time (process_time counts from the fork, or from
# the interpreter start under docker exec). Wall times swing with the host's load; CPU time much
# less, so it says what the run itself costs.
CPU_PROBE = "\nimport time as _t\nprint('cpu_ms', round(_t.process_time() * 1000, 1))\n"
WORKLOADS = {"pandas + plot": PLOT + CPU_PROBE, "pandas only": PANDAS + CPU_PROBE}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def cpu_ms(output: str) -> float:
    return float(output.rsplit("cpu_ms", 1)[1].split()[0])


def timed(fn: Callable[[], object], n: int, check: Callable[[object], bool]) -> list[float]:
    check_value = fn()  # warm-up, not counted
    if not check(check_value):
        raise SystemExit(f"bench: wrong result: {check_value!r:.300}")
    out = []
    for _ in range(n):
        start = time.perf_counter()
        value = fn()
        out.append((time.perf_counter() - start) * 1000)
        if not check(value):
            raise SystemExit(f"bench: wrong result: {value!r:.300}")
    return out


def timed_side_by_side(
    ways: dict[str, Callable[[], object]], n: int, check: Callable[[object], bool]
) -> dict[str, list[float]]:
    """``timed`` for several ways at once, their runs interleaved so load swings hit each alike."""
    for fn in ways.values():  # warm-up, not counted
        if not check(value := fn()):
            raise SystemExit(f"bench: wrong result: {value!r:.300}")
    out: dict[str, list[float]] = {way: [] for way in ways}
    for _ in range(n):
        for way, fn in ways.items():
            start = time.perf_counter()
            value = fn()
            out[way].append((time.perf_counter() - start) * 1000)
            if not check(value):
                raise SystemExit(f"bench: wrong result: {value!r:.300}")
    return out


# the breakdown's phases (science_breakdown.py's keys) and their column headings
BREAKDOWN_ROWS = {
    "DataFrame": "DataFrame",
    "plot.hist": "plot.hist",
    "save: draw": "save draw",
    "save: PNG encode": "PNG encode",
    "save: rest": "save rest",
    "redraw after the save": "redraw",
    "run": "run",
}


def breakdown(client: object, tag: str, runs: int) -> dict:
    """Run bench/science_breakdown.py in a hardened container of ``tag``; print and return its medians."""
    source = (Path(__file__).parent / "science_breakdown.py").read_text()
    out = client.containers.run(  # type: ignore[attr-defined]
        tag, ["python3", "-I", "-c", source, str(runs)], remove=True, **hardened_kwargs()
    )
    found = json.loads(out.decode().strip().splitlines()[-1])
    ways = found["ways"]
    print(f"  where a forked plot run's CPU goes in {tag} (CPU ms, median of {runs}):")
    headings = (*BREAKDOWN_ROWS.values(), "faults", "sys CPU", "PNG KB")
    print("    " + " " * 44 + "".join(f"{heading:>11}" for heading in headings))
    for way, got in ways.items():
        cells = [got[row] for row in BREAKDOWN_ROWS]
        cells += [got.get("page faults", float("nan")), got.get("system CPU", float("nan")), got["PNG KB"]]
        print(f"    {way:<44}" + "".join(f"{cell:11.1f}" for cell in cells))
    return found


def hardened_kwargs() -> dict:
    uid = SANDBOX_UID
    return {
        "network_mode": "none",
        "mem_limit": "512m",
        "memswap_limit": "512m",
        "pids_limit": 64,
        "nano_cpus": 1_000_000_000,
        "cpu_shares": SandboxSettings().cpu_shares,  # same CPU weight as ours: compare mechanisms only
        "read_only": True,
        "tmpfs": {"/tmp": "size=64m", "/work": f"size=64m,uid={uid},gid={uid},mode=0700"},
        "working_dir": "/work",
        "user": f"{uid}:{uid}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "labels": {"ragcoder-bench": "1"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="runs per way and workload (default 50)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument(
        "--against", metavar="TAG", default=None, help="also a warm pool on this image, interleaved"
    )
    ap.add_argument("--breakdown", action="store_true", help="also the plot run's CPU, phase by phase")
    args = ap.parse_args()

    import docker

    client = docker.from_env()
    try:
        client.images.get(SCIENTIFIC.tag)
    except docker.errors.ImageNotFound:
        raise SystemExit(
            "bench: build the image first: ragcoder sandbox build-image --profile scientific"
        ) from None
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}

    def record(way: str, workload: str, samples: list[float]) -> None:
        rows.setdefault(way, {})[workload] = percentiles(samples)
        p50, p95 = rows[way][workload]
        run_cpu = statistics.median(cpu[way][workload])
        print(
            f"  {way:<12} {workload:<14} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   run CPU p50 {run_cpu:7.1f} ms"
            f"   (n={len(samples)})",
            flush=True,
        )

    def keep_cpu(way: str, workload: str, output: str) -> None:
        cpu.setdefault(way, {}).setdefault(workload, []).append(cpu_ms(output))

    print(f"science bench: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, image {SCIENTIFIC.tag}")
    pools = {"warm pool": SCIENTIFIC.tag}
    if args.against:
        try:
            client.images.get(args.against)
        except docker.errors.ImageNotFound:
            raise SystemExit(f"bench: no image {args.against} (--against)") from None
        pools[f"warm pool ({args.against})"] = args.against
    breakdowns = {tag: breakdown(client, tag, args.runs) for tag in pools.values()} if args.breakdown else {}
    container = client.containers.run(SCIENTIFIC.tag, ["sleep", "infinity"], detach=True, **hardened_kwargs())
    try:
        for workload, program in WORKLOADS.items():

            def exec_(program: str = program, workload: str = workload) -> str:
                out = container.exec_run(["python3", "-I", "-c", program]).output.decode()
                keep_cpu("docker exec", workload, out)
                return out

            record("docker exec", workload, timed(exec_, args.runs, lambda out: "mean" in str(out)))
    finally:
        container.remove(force=True)

    with contextlib.ExitStack() as stack:
        routers = {}
        for way, tag in pools.items():  # each pinned to its image; the first one's start is timed
            started = time.perf_counter()
            routers[way] = stack.enter_context(ImageRouter("docker", image=tag, pool_size=2))
            routers[way].run("pass")  # the first server is up and has preloaded
            if way == "warm pool":
                start_s = time.perf_counter() - started
        for workload, program in WORKLOADS.items():

            def pooled(
                router: ImageRouter, way: str, program: str = program, workload: str = workload
            ) -> object:
                result = router.run(program)
                keep_cpu(way, workload, result.stdout)
                return result

            def good(result: object, workload: str = workload) -> bool:
                ok = getattr(result, "ok", False) and "mean" in result.stdout  # type: ignore[attr-defined]
                return ok and (workload != "pandas + plot" or "hist.png" in result.files)  # type: ignore[attr-defined]

            ways = {way: functools.partial(pooled, router, way) for way, router in routers.items()}
            for way, samples in timed_side_by_side(ways, args.runs, good).items():
                record(way, workload, samples)
    print(f"  a scientific server starts (container + preload) in {start_s:.1f} s")

    for workload in WORKLOADS:
        exec_p50 = rows["docker exec"][workload][0]
        for way in pools:
            pool_p50 = rows[way][workload][0]
            print(
                f"{workload}: {way} {pool_p50:.1f} ms vs docker exec {exec_p50:.1f} ms: {exec_p50 / pool_p50:.1f}x"
            )
    plot_p50 = rows["warm pool"]["pandas + plot"][0]
    ratio = rows["docker exec"]["pandas + plot"][0] / plot_p50
    print(
        f"targets: plot run p50 <= 30 ms: {'met' if plot_p50 <= 30 else 'NOT met'} ({plot_p50:.1f} ms); "
        f">= 10x docker exec: {'met' if ratio >= 10 else 'NOT met'} ({ratio:.1f}x)"
    )
    if args.json is not None:
        cpu_p50 = {way: {w: statistics.median(v) for w, v in by.items()} for way, by in cpu.items()}
        numbers = {"rows": rows, "cpu_p50": cpu_p50, "server_start_s": start_s, "breakdown": breakdowns}
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
