"""Two eval runs on the same tasks, paired: the discordant tasks and an exact two-sided sign test.

    python bench/paired_sign_test.py A.jsonl B.jsonl

Reads the first sample of each task from two ``ragcoder eval humaneval -o`` files; prints each
run's passes on the tasks both hold, the tasks only one passes, and the sign test's p on those.
"""

from __future__ import annotations

import json
import sys
from math import comb
from pathlib import Path


def passes(path: Path) -> dict[str, bool]:
    with open(path) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {r["task_id"]: bool(r.get("passed")) for r in rows if r.get("sample", 0) == 0}


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p of ``wins`` against ``losses`` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python bench/paired_sign_test.py A.jsonl B.jsonl")
    a, b = (passes(Path(p)) for p in argv)
    common = sorted(set(a) & set(b), key=lambda t: (len(t), t))
    only_a = [t for t in common if a[t] and not b[t]]
    only_b = [t for t in common if b[t] and not a[t]]
    print(f"{argv[0]}: {sum(a[t] for t in common)}/{len(common)}")
    print(f"{argv[1]}: {sum(b[t] for t in common)}/{len(common)}")
    print(f"only the first: {len(only_a)} {' '.join(only_a)}")
    print(f"only the second: {len(only_b)} {' '.join(only_b)}")
    print(f"exact sign test (two-sided) p = {sign_test(len(only_a), len(only_b)):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
