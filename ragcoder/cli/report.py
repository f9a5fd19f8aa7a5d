"""Progress while a batch or an eval runs, and the end-of-batch summary (a terminal table and a
Markdown report)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragcoder.agent.batch import BatchSummary


def run_progress(
    description: str, output: str, noun: str = "task(s)"
) -> tuple[Any, Callable[[int, int], None]]:
    """A progress bar (pass rate, time left) and the runner's ``on_start`` that sizes it and says
    how many ``noun`` a resumed run found already in ``output``. The bar is ``task_ids[0]``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pass {task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    bar = progress.add_task(description, total=None, rate="-")

    def on_start(todo: int, skipped: int) -> None:
        progress.update(bar, total=todo)
        if skipped:
            progress.console.print(f"resuming: {skipped} {noun} already in {output}", markup=False)

    return progress, on_start


def summary_rows(summary: BatchSummary) -> list[tuple[str, str]]:
    ran = summary.passed + summary.failed
    rate = f"{summary.passed / ran:.1%}" if ran else "n/a"
    tok_s = f"{summary.output_tokens / summary.seconds:.1f}" if summary.seconds > 0 else "n/a"
    histogram = ", ".join(f"{k}: {v}" for k, v in sorted(summary.attempts_histogram.items())) or "-"
    return [
        ("tasks", str(summary.total)),
        ("already done (skipped)", str(summary.skipped)),
        ("passed", str(summary.passed)),
        ("failed", str(summary.failed)),
        ("errors", str(summary.errors)),
        ("pass rate", rate),
        ("attempts per task (attempts: tasks)", histogram),
        ("time", f"{summary.seconds:.1f} s"),
        ("generated tokens/s", tok_s),
    ]


def print_summary(summary: BatchSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="batch summary", show_header=False)
    for key, value in summary_rows(summary):
        table.add_row(key, value)
    Console().print(table)


def write_markdown_report(summary: BatchSummary, path: Path, *, title: str, results: Path) -> None:
    lines = [f"# {title}", "", f"Results: `{results}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in summary_rows(summary)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
