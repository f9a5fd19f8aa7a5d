"""Eval files side by side for issue 18 (know when the code is right): pass@1 by the hidden tests,
how far the agent's verdict can be trusted, time, and what selection chose against what it could have.

    .venv/bin/python bench/verify_eval.py single=a.jsonl n1=b.jsonl n4=c.jsonl
    .venv/bin/python bench/verify_eval.py before=a.jsonl after=a.jsonl+rerun.jsonl

``FILE+OVERLAY``: the tasks OVERLAY holds replace FILE's (a rerun of only the tasks a change can
reach, with seeded sampling: the others would repeat FILE's rows).

Per run, on the tasks every run holds: pass@1; verdict counts and precision (of the tasks the agent
called verified or self-tested, how many pass the hidden tests); seconds per task and per solved
task (summed over tasks; with --workers > 1 tasks overlap). Runs that recorded candidates also
show: the greedy candidate alone, what the other selection method would have passed, and the
oracle (any candidate passes). Then each run against the first: tasks only one of the two passes,
and the exact two-sided sign test on them.

For runs with N > 1 candidates a round, a replay of the first round with only its first k
candidates (k = 1..N, the greedy one first), chosen again as the agent chooses (CodeT) from the
recorded test outcomes: what a smaller ``samples`` would have passed without repairs, and the
precision of its verdicts; and what taking the first candidate whenever it passes the user's tests
or the examples (the default, ``always_sample`` off) would have passed. A replay, not a run: the tests are the N-candidate run's, and time is
not replayed (measure it with --workers 1 runs).
"""

from __future__ import annotations

import json
import sys
from math import comb
from pathlib import Path


def records(path: Path) -> dict[str, dict]:
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("sample", 0) == 0 and "task_id" in row:
            rows[row["task_id"]] = row
    return rows


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial sign test on the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def hidden(row: dict, candidate: int | None) -> bool | None:
    """The hidden verdict of one candidate (a repeat has its original's)."""
    runs = {r["candidate"]: r for r in row.get("candidate_runs") or []}
    if candidate is None or candidate not in runs:
        return None
    run = runs[candidate]
    if run.get("duplicate_of"):
        run = runs[run["duplicate_of"]]
    return run.get("hidden_passed")


def summary(name: str, rows: list[dict]) -> list[str]:
    n = len(rows)
    passed = sum(bool(r.get("passed")) for r in rows)
    seconds = sum(r.get("total_ms", 0) for r in rows) / 1000
    lines = [
        f"{name}: pass@1 {passed}/{n} = {passed / n:.1%}; {seconds / n:.0f} s per task, "
        f"{seconds / max(passed, 1):.0f} s per solved task"
    ]
    verdicts: dict[str, list[bool]] = {}
    for r in rows:
        checked = r.get("visible_passed") and r.get("check") in (
            "tests",
            "examples",
        )  # runs before the verdict
        verdict = r.get("verdict") or ("verified" if checked else "unverified")
        verdicts.setdefault(verdict, []).append(bool(r.get("passed")))
    parts = [f"{v} {sum(ok)}/{len(ok)} pass hidden" for v, ok in sorted(verdicts.items())]
    trusted = [ok for v in ("verified", "self-tested") for ok in verdicts.get(v, [])]
    if trusted:
        parts.append(
            f"precision of verified+self-tested {sum(trusted)}/{len(trusted)} = {sum(trusted) / len(trusted):.1%}"
        )
    lines.append("  verdicts: " + "; ".join(parts))
    with_candidates = [r for r in rows if r.get("candidate_runs")]
    if with_candidates:
        greedy = sum(bool(hidden(r, 1)) for r in with_candidates)
        other = sum(
            bool(hidden(r, (r.get("selection_detail") or {}).get("other") or r.get("winner")))
            for r in with_candidates
        )
        oracle = sum(any(c.get("hidden_passed") for c in r["candidate_runs"]) for r in with_candidates)
        distinct = sum(r.get("distinct_candidates", 0) for r in with_candidates) / len(with_candidates)
        own = sum(r.get("own_tests", 0) for r in with_candidates) / len(with_candidates)
        lines.append(
            f"  greedy candidate alone {greedy}; the other selection method {other}; "
            f"oracle (any candidate) {oracle}; distinct candidates {distinct:.1f}, own tests {own:.1f} per task"
        )
        sampled = sum(r.get("candidates", 1) > 1 for r in with_candidates)
        lines.append(f"  sampled (more than one candidate) on {sampled} of {len(with_candidates)} tasks")
    return lines


def own_test_shares(name: str, rows: list[dict]) -> list[str]:
    """Every distinct candidate's share of the counted own tests passed, against the hidden tests:
    how often a candidate at or above each share is right (the self-tested rule)."""
    points = []
    for row in rows:
        counted = [
            i
            for i, t in enumerate(row.get("test_cases") or [])
            if t["origin"] == "generated" and not t["dropped"]
        ]
        for c in row.get("candidate_runs") or []:
            if counted and c["duplicate_of"] is None and c.get("hidden_passed") is not None:
                share = sum(c["tests"][i : i + 1] == "P" for i in counted) / len(counted)
                points.append((share, bool(c["hidden_passed"]), c["passed"], c["candidate"] == 1))
    if not points:
        return []
    parts = []
    for floor in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
        above = [ok for share, ok, ran, _ in points if share >= floor and ran]
        parts.append(f">={floor:.0%} {sum(above)}/{len(above)}")
    from ragcoder.agent.select import SELF_TESTED_SHARE as SELF_TESTED

    firsts = [(share, ok) for share, ok, ran, first in points if ran and first]
    below = [ok for share, ok in firsts if share < SELF_TESTED]
    return [
        f"  {name}: distinct candidates that passed their hard checks, by share of own tests passed: "
        f"right/all " + ", ".join(parts),
        f"  {name}: first candidates that passed their hard checks: {len(below)} of {len(firsts)} below "
        f"{SELF_TESTED:.0%} of their own tests ({sum(below)} of those right)",
    ]


def replay(name: str, rows: list[dict]) -> list[str]:
    """Round 1 chosen again from its first k candidates, k = 1..N (see the module docstring)."""
    from ragcoder.agent.result import Attempt, TestCase
    from ragcoder.agent.select import choose, verdict_for
    from ragcoder.sandbox import ExecResult

    statuses = {"P": "pass", "F": "fail", "E": "error", "T": "timeout"}
    widths = [sum(c["round"] == 1 for c in r["candidate_runs"]) for r in rows if r.get("candidate_runs")]
    if not widths or max(widths) < 2:
        return []
    lines = [f"  {name}, round 1 replayed with its first k candidates (no repairs):"]
    for k in range(1, max(widths) + 1):
        passed, trusted, right = 0, 0, 0
        for row in rows:
            tests = [TestCase(t["name"], t["origin"], dropped=t["dropped"]) for t in row["test_cases"]]
            first = [c for c in row["candidate_runs"] if c["round"] == 1][:k]
            runs, weights = [], {}
            for c in first:
                original = c["duplicate_of"] or c["candidate"]
                weights[original] = weights.get(original, 0) + 1
                if c["duplicate_of"] is None:
                    attempt = Attempt(
                        1, "generate", c["code"] or "", ExecResult(), c["passed"], candidate=c["candidate"]
                    )
                    attempt.statuses = {
                        t.name: statuses[letter]
                        for t, letter in zip(tests, c["tests"], strict=False)
                        if letter in statuses
                    }
                    runs.append(attempt)
            winner = next(r for r in runs if r.candidate == choose(runs, weights, tests).winner)
            ok = bool(hidden(row, winner.candidate))
            passed += ok
            if verdict_for(winner, tests) != "unverified":
                trusted, right = trusted + 1, right + ok
        lines.append(
            f"    k={k}: pass@1 {passed}/{len(rows)}; verified+self-tested {right}/{trusted} pass hidden"
        )
    first = [r for r in rows if r["check"] in ("tests", "examples") and r["candidate_runs"][0]["passed"]]
    kept = sum(bool(hidden(r, 1)) for r in first) + sum(bool(r.get("passed")) for r in rows if r not in first)
    lines.append(
        f"    the first candidate when it passes the hard checks (always_sample off): pass@1 {kept}/{len(rows)}; "
        f"sampled on {len(rows) - len(first)} of {len(rows)} tasks"
    )
    return lines


def main(argv: list[str]) -> None:
    if not argv or any(a in ("-h", "--help") for a in argv):
        sys.exit(
            "usage: verify_eval.py NAME=RESULTS.jsonl[+OVERLAY.jsonl] [NAME=...] (eval -o files; the first is the base)"
        )
    runs = {}
    for item in argv:
        name, _, spec = item.partition("=")
        paths = [Path(p) for p in spec.split("+")] if spec else []
        if not name or not paths or not all(p.is_file() for p in paths):
            sys.exit(f"verify_eval.py: {item!r} is not NAME=FILE[+OVERLAY] with existing eval results files")
        runs[name] = {task: row for path in paths for task, row in records(path).items()}
    common = sorted(set.intersection(*(set(r) for r in runs.values())), key=lambda t: int(t.split("/")[1]))
    if not common:
        sys.exit("verify_eval.py: the runs share no task (dev and test files?): compare runs of one split")
    print(f"{len(common)} tasks in every run")
    for name, rows in runs.items():
        held = [rows[t] for t in common]
        print("\n".join(summary(name, held) + replay(name, held) + own_test_shares(name, held)))
    base_name, base = next(iter(runs.items()))
    for name, rows in list(runs.items())[1:]:
        wins = [t for t in common if rows[t].get("passed") and not base[t].get("passed")]
        losses = [t for t in common if base[t].get("passed") and not rows[t].get("passed")]
        print(
            f"{name} vs {base_name}: {len(wins)} pass only in {name}, {len(losses)} only in {base_name}, "
            f"sign test p = {sign_test(len(wins), len(losses)):.3f}"
        )
        print(
            f"  only {name}: {', '.join(t.split('/')[1] for t in wins) or '-'}; "
            f"only {base_name}: {', '.join(t.split('/')[1] for t in losses) or '-'}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
