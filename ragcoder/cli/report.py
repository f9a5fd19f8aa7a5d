"""Progress (the model loading, a batch or an eval running) and the end-of-batch summary (a
terminal table and a Markdown report with a row per task)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragcoder.agent.batch import BatchSummary
    from ragcoder.agent.config import AgentConfig
    from ragcoder.agent.loop import CodeAgent


class _Elapsed:
    """A status line that counts the seconds each time the spinner redraws it."""

    def __init__(self, what: str) -> None:
        self.what, self.started = what, time.monotonic()

    def __rich__(self) -> str:
        return f"{self.what} ({time.monotonic() - self.started:.0f} s)"


@contextmanager
def loading(what: str) -> Iterator[None]:
    """A spinner with seconds on stderr while something slow starts (nothing when not a terminal)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with console.status(_Elapsed(what)):  # type: ignore[arg-type]
        yield


def open_agent(config: AgentConfig, **kwargs: Any) -> CodeAgent:
    """``build_agent`` with a spinner: the sandbox, the index and the model take seconds to open."""
    from ragcoder.agent.config import build_agent

    where = f"the model at {config.llm_url}" if config.llm_url else f"the model {config.model}"
    with loading(f"opening the sandbox and loading {where}"):
        return build_agent(config, **kwargs)


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


def _cell(text: Any, limit: int = 160) -> str:
    """One Markdown table cell: one line, pipes escaped, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    flat = flat if len(flat) <= limit else flat[: limit - 3] + "..."
    return flat.replace("\\", "\\\\").replace("|", "\\|").replace("`", "'")


def failing_check(record: dict[str, Any]) -> str:
    """What the last attempt failed on: its first failing test with its message, else its error."""
    if record.get("error"):
        return str(record["error"])
    if record.get("passed"):
        return ""
    last = (record.get("attempts") or [{}])[-1]
    for test in last.get("tests") or []:
        if not test.get("passed"):
            return f"{test.get('name', '')}: {test.get('message', '')}"
    error = (last.get("result") or {}).get("error") or {}
    if error:
        return f"{error.get('name', '')}: {error.get('value', '')}"
    return str(last.get("feedback") or "")


def task_rows(records: list[dict[str, Any]]) -> list[str]:
    """The per-task table: id, verdict, attempts, time, the failing check."""
    rows = ["| id | verdict | attempts | time | failing check |", "|---|---|---:|---:|---|"]
    for r in records:
        verdict = "error" if r.get("error") else ("passed" if r.get("passed") else "failed")
        if r.get("passed") and r.get("verdict"):  # how far the pass can be trusted
            verdict += f" ({r['verdict']})"
        seconds = f"{float(r.get('total_ms') or 0) / 1000:.1f} s"
        rows.append(
            f"| {_cell(r.get('id', ''))} | {verdict} | {len(r.get('attempts') or [])} | {seconds} "
            f"| {_cell(failing_check(r))} |"
        )
    return rows


def write_markdown_report(summary: BatchSummary, path: Path, *, title: str, results: Path) -> None:
    from ragcoder.agent.records import read_records

    lines = [f"# {title}", "", f"Results: `{results}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in summary_rows(summary)]
    if results.exists():
        lines += ["", "## Tasks", "", *task_rows(read_records(results))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
