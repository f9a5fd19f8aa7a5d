"""Sandbox latency, side by side in one run: how fast is a run, per way of running it?

    python bench/sandbox_bench.py [--runs 100] [--cold-runs 10] [--json out.json]
    python bench/sandbox_bench.py --against REV [--rounds 3]   # this tree vs git revision REV

Ways compared (same code, same machine, same minute):
  docker run     a fresh hardened container per run (docker SDK, `remove=True`)
  docker exec    `exec_run` into one warm container (the way peers do it)
  warm pool      our DockerSandbox: a warm container whose server forks a pre-set-up child per run
  local          our LocalSandbox (bubblewrap), same server
  subprocess     plain `python3 -I -c` on the host (no isolation: the floor)
Workloads: a trivial program, and a 100-line script with 10 test asserts (via run_tests).
Then: 100 warm-pool runs in a row must leak no container, no process and no memory; and the
throughput of 2 runs in parallel against 1 at a time.

``--against REV`` measures only the warm pool and local ways, for this tree and for git revision
REV, in alternating subprocesses (each imports its own copy of the package), so a change to the
per-run path is measured before and after in one run, on the same minute's machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragcoder.sandbox import ExecResult, SandboxSettings, open_sandbox
from ragcoder.sandbox.harness import parse_standalone, standalone_job
from ragcoder.sandbox.settings import DEFAULT_IMAGE, SANDBOX_UID

TRIVIAL = "print(sum(range(10)))"

SCRIPT_100 = '''
"""A 100-line module: small algorithms a generated solution might contain."""
from collections import Counter, deque
import math, re


def is_prime(n):
    if n < 2:
        return False
    for d in range(2, int(math.isqrt(n)) + 1):
        if n % d == 0:
            return False
    return True


def primes_below(n):
    return [k for k in range(n) if is_prime(k)]


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def word_counts(text):
    return Counter(re.findall(r"[a-z]+", text.lower()))


def reverse_words(s):
    return " ".join(reversed(s.split()))


def flatten(items):
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out


def bfs(graph, start):
    seen, order, queue = {start}, [], deque([start])
    while queue:
        node = queue.popleft()
        order.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return order


def merge_sort(xs):
    if len(xs) <= 1:
        return list(xs)
    mid = len(xs) // 2
    left, right = merge_sort(xs[:mid]), merge_sort(xs[mid:])
    merged = []
    while left and right:
        merged.append(left.pop(0) if left[0] <= right[0] else right.pop(0))
    return merged + left + right


def gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def roman(n):
    table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
             (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
    out = []
    for value, sym in table:
        while n >= value:
            out.append(sym)
            n -= value
    return "".join(out)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, x):
        self.items.append(x)

    def pop(self):
        return self.items.pop()

    def __len__(self):
        return len(self.items)
'''

TESTS_10 = """
assert is_prime(97) and not is_prime(91)
assert primes_below(20) == [2, 3, 5, 7, 11, 13, 17, 19]
assert fib(30) == 832040
assert word_counts("a b a")["a"] == 2
assert reverse_words("one two three") == "three two one"
assert flatten([1, [2, (3, [4])]]) == [1, 2, 3, 4]
assert bfs({1: [2, 3], 2: [4]}, 1) == [1, 2, 3, 4]
assert merge_sort([5, 2, 9, 1]) == [1, 2, 5, 9]
assert gcd(84, 36) == 12 and roman(1994) == "MCMXCIV"
def test_stack():
    s = Stack(); s.push(1); s.push(2)
    assert s.pop() == 2 and len(s) == 1
"""


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def timed(fn: Callable[[], object], n: int, check: Callable[[object], bool]) -> list[float]:
    fn()  # warm-up, not counted
    out = []
    for _ in range(n):
        start = time.perf_counter()
        value = fn()
        out.append((time.perf_counter() - start) * 1000)
        if not check(value):
            raise SystemExit(f"bench: wrong result: {value!r:.300}")
    return out


def hardened_kwargs() -> dict:
    return {
        "network_mode": "none",
        "mem_limit": "512m",
        "memswap_limit": "512m",
        "pids_limit": 64,
        "nano_cpus": 1_000_000_000,
        "cpu_shares": SandboxSettings().cpu_shares,  # same CPU weight as ours: compare mechanisms only
        "read_only": True,
        "tmpfs": {"/tmp": "size=64m"},
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "labels": {"ragcoder-bench": "1"},
    }


PACKAGE_DIRS = {"agent": "agent", "chains": "chains", "sandbox": "sandbox", "finetune": "finetune"}
REPO = Path(__file__).resolve().parents[1]

# Runs in a subprocess whose sys.path starts at one version's package copy.
MEASURE = """
import json, statistics, sys, time
from ragcoder.sandbox import open_sandbox
work = json.loads(sys.argv[1])
out = {}
for kind in ("docker", "local"):
    with open_sandbox(kind, pool_size=2) as sb:
        for name, call in (("trivial", lambda: sb.run(work["trivial"]).stdout == "45\\n"),
                           ("100-line + tests", lambda: sb.run_tests(work["script"], work["tests"]).passed)):
            for _ in range(5):
                call()
            samples = []
            for _ in range(work["runs"]):
                start = time.perf_counter()
                assert call(), name
                samples.append((time.perf_counter() - start) * 1000)
            out[kind + " / " + name] = statistics.median(samples)
print(json.dumps(out))
"""


def package_copy(rev: str | None, into: Path) -> Path:
    """The package laid out as installed (ragcoder/ with its folders inside), from git revision
    ``rev`` or from this working tree; returns the folder to put first on sys.path."""
    src = into / "src"
    src.mkdir(parents=True)
    with open(into / "tree.tar", "wb") as tar:
        if rev is None:
            files = subprocess.run(
                ["git", "ls-files", "-co", "--exclude-standard", "ragcoder", *PACKAGE_DIRS.values()],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            subprocess.run(["tar", "-c", *files], cwd=REPO, stdout=tar, check=True)
        else:
            subprocess.run(["git", "archive", rev], cwd=REPO, stdout=tar, check=True)
    subprocess.run(["tar", "-x", "-f", str(into / "tree.tar"), "-C", str(src)], check=True)
    root = into / "layout"
    (root / "ragcoder").parent.mkdir()
    (src / "ragcoder").rename(root / "ragcoder")
    for name, folder in PACKAGE_DIRS.items():
        (src / folder).rename(root / "ragcoder" / name)
    return root


def against(rev: str, rounds: int, runs: int) -> None:
    """This tree and ``rev`` alternately, ``rounds`` times: medians of each round's p50."""
    work = json.dumps({"trivial": TRIVIAL, "script": SCRIPT_100, "tests": TESTS_10, "runs": runs})
    with tempfile.TemporaryDirectory() as tmp:
        roots = {
            "this tree": package_copy(None, Path(tmp) / "new"),
            rev: package_copy(rev, Path(tmp) / "old"),
        }
        seen: dict[str, dict[str, list[float]]] = {name: {} for name in roots}
        for round_ in range(rounds):
            order = list(roots) if round_ % 2 == 0 else list(reversed(roots))
            for name in order:
                env = {**os.environ, "PYTHONPATH": str(roots[name])}
                out = subprocess.run(
                    [sys.executable, "-c", MEASURE, work], env=env, cwd=tmp, capture_output=True, text=True
                )
                if out.returncode != 0:
                    raise SystemExit(f"bench: {name} failed: {out.stderr[-2000:]}")
                for way, p50 in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    seen[name].setdefault(way, []).append(p50)
                print(f"  round {round_ + 1}: {name} done", flush=True)
    print(f"\n| way (p50 ms, median of {rounds} rounds of {runs} runs) | {rev} | this tree | ratio |")
    print("|---|---:|---:|---:|")
    for way in seen["this tree"]:
        old, new = statistics.median(seen[rev][way]), statistics.median(seen["this tree"][way])
        print(f"| {way} | {old:.1f} | {new:.1f} | {new / old:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="runs per warm way (default 100)")
    ap.add_argument("--cold-runs", type=int, default=10, help="runs for cold `docker run` (slow)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--against", metavar="REV", help="compare the warm ways with git revision REV")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds with --against (default 3)")
    args = ap.parse_args()
    if args.against:
        print(
            f"sandbox bench: this tree vs {args.against}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
        )
        against(args.against, args.rounds, args.runs)
        return

    import docker

    client = docker.from_env()
    # The ways without our server run the same judge as an ordinary program, its job on stdin
    # (what Sandbox.run_tests does for any backend): same checks, mechanisms compared.
    judge, job, secret = standalone_job(SCRIPT_100, TESTS_10, None)
    piped = 'printf %s "$JOB" | python3 -I -c "$PROG"'
    programs = {"trivial": TRIVIAL, "100-line + tests": judge}
    stdins = {"trivial": "", "100-line + tests": job}
    expect = {
        "trivial": lambda out: "45" in out,
        "100-line + tests": lambda out: parse_standalone(ExecResult(stdout=out), secret).passed,
    }
    rows: dict[str, dict[str, tuple[float, float]]] = {}

    def record(way: str, workload: str, samples: list[float]) -> None:
        rows.setdefault(way, {})[workload] = percentiles(samples)
        p50, p95 = rows[way][workload]
        print(
            f"  {way:<12} {workload:<18} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   (n={len(samples)})",
            flush=True,
        )

    print(f"sandbox bench: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, image {DEFAULT_IMAGE}")
    for workload, program in programs.items():
        ok = expect[workload]

        def cold(program: str = program, stdin: str = stdins[workload]) -> str:
            out = client.containers.run(
                DEFAULT_IMAGE,
                ["sh", "-c", piped],
                environment={"JOB": stdin, "PROG": program},
                remove=True,
                **hardened_kwargs(),
            )
            return out.decode()

        record("docker run", workload, timed(cold, args.cold_runs, ok))

    warm = client.containers.run(DEFAULT_IMAGE, ["sleep", "infinity"], detach=True, **hardened_kwargs())
    try:
        for workload, program in programs.items():

            def exec_(program: str = program, stdin: str = stdins[workload]) -> str:
                cmd = ["sh", "-c", piped]
                return warm.exec_run(cmd, environment={"JOB": stdin, "PROG": program}).output.decode()

            record("docker exec", workload, timed(exec_, args.runs, expect[workload]))
    finally:
        warm.remove(force=True)

    for way, kind in (("warm pool", "docker"), ("local", "local")):
        with open_sandbox(kind, pool_size=2) as sb:
            record(way, "trivial", timed(lambda sb=sb: sb.run(TRIVIAL).stdout, args.runs, expect["trivial"]))
            record(
                way,
                "100-line + tests",
                timed(lambda sb=sb: sb.run_tests(SCRIPT_100, TESTS_10), args.runs, lambda r: r.passed),  # type: ignore[attr-defined]
            )

    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    for workload, program in programs.items():

        def sub(program: str = program, stdin: str = stdins[workload]) -> str:
            return subprocess.run(
                [py, "-I", "-c", program], input=stdin, capture_output=True, text=True, check=False
            ).stdout

        record("subprocess", workload, timed(sub, args.runs, expect[workload]))

    # 100 runs in a row: no leaked container, process or memory; then parallel throughput.
    def labelled() -> int:
        return len(client.api.containers(all=True, filters={"label": "ragcoder=1"}))

    def host_children() -> int:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(os.getpid())], capture_output=True, text=True)
        return len(out.stdout.split()) - 1  # minus ps itself

    def host_rss_mib() -> float:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024

    containers_before = labelled()
    mem_probe = "print(open('/sys/fs/cgroup/memory/memory.usage_in_bytes').read())"
    with open_sandbox("docker", pool_size=2) as sb:
        sb.run("pass")
        children_before = host_children()
        mem_before = int(sb.run(mem_probe).stdout)
        rss_before = host_rss_mib()
        for _ in range(100):
            assert sb.run(TRIVIAL).stdout == "45\n"
        mem_after = int(sb.run(mem_probe).stdout)
        rss_after = host_rss_mib()
        children_after = host_children()
        in_use = len(sb.containers())  # type: ignore[attr-defined]

        def burst(parallel: int, total: int) -> float:
            per_thread = total // parallel

            def work() -> None:
                for _ in range(per_thread):
                    sb.run_tests(SCRIPT_100, TESTS_10)

            threads = [threading.Thread(target=work) for _ in range(parallel)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return per_thread * parallel / (time.perf_counter() - start)

        serial = burst(1, args.runs)
        parallel = burst(2, args.runs)
    time.sleep(0.5)
    containers_after = labelled()

    print("\n| way | trivial p50 | trivial p95 | 100-line+tests p50 | 100-line+tests p95 |")
    print("|---|---:|---:|---:|---:|")
    for way, by_work in rows.items():
        t50, t95 = by_work["trivial"]
        s50, s95 = by_work["100-line + tests"]
        print(f"| {way} | {t50:.1f} ms | {t95:.1f} ms | {s50:.1f} ms | {s95:.1f} ms |")
    pool50 = rows["warm pool"]["trivial"][0]
    ratios = {way: rows[way]["trivial"][0] / pool50 for way in rows}
    print("\nratios (trivial p50, way / warm pool): " + ", ".join(f"{w} {r:.1f}x" for w, r in ratios.items()))
    target_ok = pool50 <= 10 and ratios["docker exec"] >= 5
    print(
        f"target (warm pool p50 <= 10 ms and >= 5x faster than docker exec): {'MET' if target_ok else 'NOT MET'}"
    )
    print(
        f"100 runs in a row: containers in use {in_use} (pool of 2), ragcoder containers before/after "
        f"{containers_before}/{containers_after}, host child processes {children_before}->{children_after}, "
        f"container memory {mem_before / 2**20:.1f}->{mem_after / 2**20:.1f} MiB, "
        f"host RSS {rss_before:.1f}->{rss_after:.1f} MiB"
    )
    print(
        f"throughput (100-line + tests): 1 at a time {serial:.0f} runs/s, 2 in parallel {parallel:.0f} runs/s ({parallel / serial:.2f}x)"
    )
    client.close()
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "ratios": ratios,
                    "target_met": target_ok,
                    "leaks": {
                        "containers_before": containers_before,
                        "containers_after": containers_after,
                        "children": [children_before, children_after],
                        "container_mem_bytes": [mem_before, mem_after],
                    },
                    "throughput": {"serial": serial, "parallel2": parallel},
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
