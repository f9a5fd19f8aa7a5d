"""Requests with no tests and no usable examples (issue 18): the model's tests first and a greedy
answer self-tested on them kept ("first", the default), against sampling every candidate and the
tests in one call ("always", ``always_sample``, the behaviour before), side by side in one run.

    flock /tmp/ragcoder-heavy.lock .venv/bin/python bench/selftest_first_bench.py \\
        --tasks 79,41,80,50,78,38,67,68,81 -o finetune/results/qwen_dev_noexamples_words

One model load; for each dev task (asked in words) the two configurations run one after the other,
one request at a time, so they see the same load. Records go to PREFIX_first.jsonl and
PREFIX_always.jsonl (eval records: ``bench/verify_eval.py`` reads them; a rerun resumes). Prints
per task the seconds and verdicts of both, then the mean time ratio and verdict precision (of the
answers called verified or self-tested, how many pass the hidden tests). Dev split only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONFIGS = {"first": False, "always": True}  # name -> always_sample


def read(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["task_id"]: r for r in rows if "task_id" in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True, help="dev task numbers, e.g. 41,50,38")
    parser.add_argument("-o", "--prefix", required=True, type=Path)
    parser.add_argument("--report-only", action="store_true", help="print the table from the records")
    parser.add_argument("--model", default=None, help="[default: the configured model]")
    args = parser.parse_args()
    from ragcoder.finetune.evaluate import select_problems

    problems = select_problems("dev", tasks=args.tasks)  # the test split is never tuned on
    order = [f"HumanEval/{t.split('/')[-1].strip()}" for t in args.tasks.split(",")]
    problems.sort(key=lambda p: order.index(p.task_id) if p.task_id in order else len(order))
    paths = {name: args.prefix.with_name(f"{args.prefix.name}_{name}.jsonl") for name in CONFIGS}
    if not args.report_only:
        from ragcoder.agent.config import resolve_config
        from ragcoder.finetune.evaluate import run_eval

        from ragcoder.cli.report import open_agent

        with open_agent(resolve_config({"sandbox": "docker", "model": args.model}), workers=1) as agent:
            for problem in problems:
                for name, always in CONFIGS.items():
                    agent.always_sample = always
                    run_eval(
                        agent,
                        [problem],
                        paths[name],
                        prompt_style="words",
                        on_result=lambda r, n=name: print(
                            f"[{r['task_id']} {n}] {r.get('total_ms', 0) / 1000:.1f}s "
                            f"{'PASSED' if r.get('passed') else 'failed'} {r.get('summary', r.get('error', ''))}",
                            flush=True,
                        ),
                    )
    report({name: read(path) for name, path in paths.items()}, [p.task_id for p in problems])


def report(runs: dict[str, dict[str, dict]], task_ids: list[str]) -> None:
    held = [t for t in task_ids if all(t in rows for rows in runs.values())]
    print(f"{len(held)} task(s) in both runs")
    if not held:
        return
    print("| task | " + " | ".join(f"{n}: s, candidates, verdict, hidden" for n in runs) + " |")
    for task in held:
        cells = []
        for rows in runs.values():
            r = rows[task]
            hidden = "pass" if r.get("passed") else "fail"
            cells.append(f"{r['total_ms'] / 1000:.1f}, {r.get('candidates')}, {r.get('verdict')}, {hidden}")
        print(f"| {task} | " + " | ".join(cells) + " |")
    means = {}
    for name, rows in runs.items():
        chosen = [rows[t] for t in held]
        means[name] = sum(r["total_ms"] for r in chosen) / len(chosen) / 1000
        trusted = [bool(r.get("passed")) for r in chosen if r.get("verdict") in ("verified", "self-tested")]
        strict = [  # self-tested as it was before: every counted own test passed
            bool(r.get("passed"))
            for r in chosen
            if r.get("verdict") != "unverified" and r.get("own_tests_passed") == r.get("own_tests")
        ]
        tokens = sum(r.get("output_tokens", 0) for r in chosen) / len(chosen)
        print(
            f"{name}: {means[name]:.1f} s per request, {tokens:.0f} generated tokens per request; "
            f"pass@1 {sum(bool(r.get('passed')) for r in chosen)}/{len(chosen)}; "
            f"verified+self-tested {sum(trusted)}/{len(trusted)} pass hidden "
            f"(self-tested only when every own test passed: {sum(strict)}/{len(strict)})"
        )
    first, *others = runs
    for other in others:
        print(f"time per request, {first} / {other}: {means[first] / means[other]:.2f}")


if __name__ == "__main__":
    main()
