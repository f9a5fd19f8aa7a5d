"""The example-variant guard replayed on recorded answers (issue 18): how often an answer that
passed the request's examples raises or hangs on the examples' inputs one item shorter, for answers
the hidden tests pass and for those they fail. No model runs: only the sandbox.

    .venv/bin/python bench/variant_guard_replay.py finetune/results/a.jsonl [b.jsonl ...]

Per task, the first answer (candidate 1, or a single shot's answer) when the request had usable
examples and it passed them; a task in several files counts once (the first file's), so pass one
run's files per call (e.g. the stub form and the words form separately).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def first_answer(row: dict) -> tuple[str, bool, list, str] | None:
    """(code, passes the hidden tests, example cases, function) of the first answer, when it
    passed the request's examples; records without candidates (single shots) are their answer."""
    from ragcoder.agent import select
    from ragcoder.agent.checks import hard_cases, hard_checks
    from ragcoder.agent.tasks import Task
    from ragcoder.chains.prompting.test_gen import find_function_name

    runs = row.get("candidate_runs")
    if runs:
        greedy = runs[0]
        if row.get("check") != "examples" or not greedy.get("passed") or greedy.get("hidden_passed") is None:
            return None
        names = [t["name"] for t in row["test_cases"] if t["origin"] == "example"]
        return (
            greedy["code"],
            bool(greedy["hidden_passed"]),
            select.assert_cases(names, "example"),
            row["function"],
        )
    if len(row.get("attempts") or []) != 1 or not row.get("visible_passed"):
        return None
    function = find_function_name(row["instruction"])
    source, check = hard_checks(Task(id=row["task_id"], instruction=row["instruction"]), function, [])
    if check != "examples" or function is None:
        return None
    task = Task(id=row["task_id"], instruction=row["instruction"])
    return row["code"], bool(row.get("passed")), hard_cases(task, source, check), function


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
            answer = first_answer(row)
            if answer is None:
                continue
            code, right, examples, function = answer
            counts[right][0] += 1
            variants = example_variants(examples, function)
            if not variants:
                continue
            attempt = Attempt(1, "generate", code, ExecResult(), False)
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
