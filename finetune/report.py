"""From an eval JSONL to numbers: pass@k, pass rate after each attempt, cost per solved task,
BLEU/CodeBLEU/ROUGE-L against the canonical solutions and their correlation with passing;
written as Markdown with a PNG plot of pass rate by attempt."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcoder.agent.records import read_records as batch_records
from ragcoder.finetune.metrics import mean_pass_at_k, point_biserial

SIMILARITY_METRICS = ("bleu", "codebleu", "rouge_l")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every complete JSON line of an eval results file (a torn last line is skipped)."""
    return batch_records(path, key="task_id")


@dataclass
class SimilarityStats:
    metric: str
    mean: float
    mean_passed: float | None
    mean_failed: float | None
    correlation: float | None  # point-biserial with pass/fail
    count: int


@dataclass
class EvalStats:
    tasks: int
    records: int
    samples_per_task: int
    errors: int
    pass_at: dict[int, float]  # k -> pass@k
    solved_tasks: int  # tasks with at least one passing sample
    pass_after_attempt: list[float]  # hidden pass rate after attempt 1, 2, ... (index 0 = attempt 1)
    visible_pass_rate: float  # how often the agent believed it passed (its visible checks)
    seconds_total: float
    seconds_per_solved: float | None
    output_tokens_per_solved: float | None
    tokens_total: int
    similarity: list[SimilarityStats] = field(default_factory=list)


def pass_after_attempts(record: dict[str, Any], max_attempts: int) -> list[bool]:
    """Hidden verdict of the code the agent held after attempt 1..max (it stops once its checks pass)."""
    attempts = record.get("attempts") or []
    if not attempts:
        return [False] * max_attempts
    return [bool(attempts[min(i, len(attempts)) - 1]["passed"]) for i in range(1, max_attempts + 1)]


def summarise(records: list[dict[str, Any]]) -> EvalStats:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_task[record["task_id"]].append(record)
    counts = [(len(rs), sum(bool(r.get("passed")) for r in rs)) for rs in by_task.values()]
    n_min = min((n for n, _ in counts), default=1)
    ks = [k for k in (1, 2, 5, 10, 20, 50, 100) if k <= n_min]
    pass_at = {k: mean_pass_at_k(counts, k) for k in ks}
    max_attempts = max((len(r.get("attempts") or []) for r in records), default=1) or 1
    ok_records = [r for r in records if "error" not in r]
    curves = [pass_after_attempts(r, max_attempts) for r in records]
    pass_after = [sum(c[i] for c in curves) / len(curves) for i in range(max_attempts)] if curves else []
    solved_records = sum(bool(r.get("passed")) for r in records)
    seconds = sum(r.get("total_ms", 0.0) for r in records) / 1000
    tokens = sum(r.get("output_tokens", 0) for r in records)
    similarity = []
    for metric in SIMILARITY_METRICS:
        pairs = [(r[metric], bool(r["passed"])) for r in ok_records if r.get(metric) is not None]
        if not pairs:
            continue
        scores, passed = [p[0] for p in pairs], [p[1] for p in pairs]
        good = [s for s, p in pairs if p]
        bad = [s for s, p in pairs if not p]
        similarity.append(
            SimilarityStats(
                metric=metric,
                mean=sum(scores) / len(scores),
                mean_passed=sum(good) / len(good) if good else None,
                mean_failed=sum(bad) / len(bad) if bad else None,
                correlation=point_biserial(scores, passed),
                count=len(pairs),
            )
        )
    return EvalStats(
        tasks=len(by_task),
        records=len(records),
        samples_per_task=n_min,
        errors=len(records) - len(ok_records),
        pass_at=pass_at,
        solved_tasks=sum(c > 0 for _, c in counts),
        pass_after_attempt=pass_after,
        visible_pass_rate=sum(bool(r.get("visible_passed")) for r in records) / len(records)
        if records
        else 0.0,
        seconds_total=seconds,
        seconds_per_solved=seconds / solved_records if solved_records else None,
        output_tokens_per_solved=tokens / solved_records if solved_records else None,
        tokens_total=tokens,
        similarity=similarity,
    )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(
    stats: EvalStats,
    *,
    title: str,
    results: Path | None = None,
    plot: Path | None = None,
    command: str | None = None,
) -> str:
    lines = [f"# {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    if results:
        lines += [f"Results: `{results}`", ""]
    solved = round(stats.pass_at.get(1, 0) * stats.tasks * stats.samples_per_task)
    lines += [
        "| metric | value |",
        "|---|---|",
        f"| tasks | {stats.tasks} ({stats.samples_per_task} sample(s) each, {stats.errors} errors) |",
    ]
    for k, value in stats.pass_at.items():
        extra = f" ({solved}/{stats.tasks * stats.samples_per_task})" if k == 1 else ""
        lines.append(f"| pass@{k} | {value:.1%}{extra} |")
    lines.append(f"| tasks solved by any sample | {stats.solved_tasks}/{stats.tasks} |")
    lines.append(f"| agent's own checks passed (visible examples) | {stats.visible_pass_rate:.1%} |")
    for i, rate in enumerate(stats.pass_after_attempt, 1):
        label = "after attempt 1 (single shot)" if i == 1 else f"after attempt {i} (repair {i - 1})"
        lines.append(f"| pass rate {label} | {rate:.1%} |")
    lines.append(
        f"| time, summed over tasks (tasks overlap with --workers > 1) | {stats.seconds_total:.0f} s |"
    )
    lines.append(f"| time per solved task | {_fmt(stats.seconds_per_solved, '.1f')} s |")
    lines.append(f"| generated tokens per solved task | {_fmt(stats.output_tokens_per_solved, '.0f')} |")
    if stats.similarity:
        lines += [
            "",
            "Similarity of the final code to the canonical solution, and its point-biserial "
            "correlation with passing the hidden tests:",
            "",
            "| metric | mean | mean (passed) | mean (failed) | r_pb with pass | n |",
            "|---|---|---|---|---|---|",
        ]
        for s in stats.similarity:
            lines.append(
                f"| {s.metric} | {s.mean:.3f} | {_fmt(s.mean_passed)} | {_fmt(s.mean_failed)} | "
                f"{_fmt(s.correlation)} | {s.count} |"
            )
    if plot:
        lines += ["", f"![pass rate by attempt]({plot.name})"]
    return "\n".join(lines) + "\n"


def plot_pass_by_attempt(stats: EvalStats, path: Path, *, title: str) -> Path:
    """A PNG line plot of the hidden pass rate after each attempt (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attempts = list(range(1, len(stats.pass_after_attempt) + 1))
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot(attempts, [100 * r for r in stats.pass_after_attempt], marker="o")
    ax.set_xlabel("attempt (1 = first generation, then repairs)")
    ax.set_ylabel("hidden tests passed (%)")
    ax.set_xticks(attempts or [1])
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(results: Path, report: Path, *, title: str, command: str | None = None) -> EvalStats:
    """Summarise ``results`` into ``report`` (Markdown) and ``report`` with a .png suffix (plot)."""
    stats = summarise(read_records(results))
    plot = plot_pass_by_attempt(stats, report.with_suffix(".png"), title=title)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(markdown(stats, title=title, results=results, plot=plot, command=command), "utf-8")
    return stats


def compare(runs: dict[str, Path]) -> str:
    """A side-by-side Markdown table of several eval files, on the tasks they ALL contain."""
    loaded = {
        name: {r["task_id"]: r for r in read_records(path) if r.get("sample", 0) == 0}
        for name, path in runs.items()
    }
    common = set.intersection(*(set(v) for v in loaded.values())) if loaded else set()
    header = "| run | tasks | pass@1 | after last attempt | s per task | gen. tokens per task |"
    lines = [header, "|---|---|---|---|---|---|"]
    for name, records in loaded.items():
        subset = [records[t] for t in sorted(common)]
        stats = summarise(subset)
        n = max(1, len(subset))
        passed = sum(bool(r.get("passed")) for r in subset)
        last = stats.pass_after_attempt[-1] if stats.pass_after_attempt else 0.0
        lines.append(
            f"| {name} | {len(subset)} | {passed}/{len(subset)} = {passed / n:.1%} | {last:.1%} | "
            f"{stats.seconds_total / n:.1f} | {stats.tokens_total / n:.0f} |"
        )
    return "\n".join(lines) + "\n"
