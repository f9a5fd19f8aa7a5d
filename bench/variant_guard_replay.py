"""The example-variant guard replayed on recorded answers (issue 18): how often an answer that
passed the request's examples raises or hangs on the examples' inputs one item shorter, for answers
the hidden tests pass and for those they fail. No model runs: only the sandbox.

    .venv/bin/python bench/variant_guard_replay.py finetune/results/a.jsonl [b.jsonl ...]

Per file, the greedy candidate (candidate 1) of every task whose check was the examples and that
passed them; a task in several files counts once (the first file's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    from ragcoder.agent import select
    from ragcoder.agent.checks import example_variants, raised_on
    from ragcoder.agent.result import Attempt
    from ragcoder.sandbox import ExecResult, open_sandbox

    rows: dict[str, dict] = {}
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("sample", 0) == 0 and row["task_id"] not in rows:
                rows[row["task_id"]] = row
    counts = {True: [0, 0], False: [0, 0]}  # hidden passed -> [guarded, flagged]
    flagged: list[str] = []
    with open_sandbox("docker") as sandbox:
        for task_id, row in sorted(rows.items(), key=lambda kv: int(kv[0].split("/")[1])):
            greedy = (row.get("candidate_runs") or [{}])[0]
            if (
                row.get("check") != "examples"
                or not greedy.get("passed")
                or greedy.get("hidden_passed") is None
            ):
                continue
            examples = [t for t in row["test_cases"] if t["origin"] == "example"]
            cases = select.assert_cases([t["name"] for t in examples], "example")
            variants = example_variants(cases, row["function"])
            right = bool(greedy["hidden_passed"])
            counts[right][0] += 1
            if not variants:
                continue
            attempt = Attempt(1, "generate", greedy["code"], ExecResult(), False)
            select.run_candidate(
                sandbox, attempt, [], variants, entry_point=None, test_timeout=1.0, timeout=None
            )
            bad = raised_on(attempt.outputs, variants)
            if bad:
                counts[right][1] += 1
                flagged.append(f"{task_id} ({'right' if right else 'wrong'}): {bad[0]}")
    for right, (guarded, hit) in counts.items():
        print(f"answers the hidden tests {'pass' if right else 'fail'}: {hit} of {guarded} flagged")
    print("\n".join(flagged))


if __name__ == "__main__":
    main(sys.argv[1:])
