"""The `ragcoder` command: a thin layer over `agent/`. Heavy imports happen inside commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.result import AgentResult

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is never needed: models come from our cache
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_OUR_PACKAGES = ("agent.", "chains.", "sandbox.", "finetune.")


def _is_ours(exc: BaseException) -> bool:
    return any(type(exc).__module__.startswith(p) for p in _OUR_PACKAGES)


class RagcoderGroup(click.Group):
    """Turns our own errors into one line (`error: ...` and a `hint:`) and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as exc:
            if not _is_ours(exc) and not isinstance(exc, FileNotFoundError | PermissionError):
                raise
            click.echo(f"error: {exc}", err=True)
            hint = getattr(exc, "hint", "")
            if hint:
                click.echo(f"hint: {hint}", err=True)
            sys.exit(1)


def _agent_options(func: Any) -> Any:
    """Flags shared by solve and batch; unset flags (None) leave config files and env in charge."""
    options = [
        click.option("--model", default=None, help="Known model name, HF folder or .gguf file."),
        click.option("--adapter", default=None, type=click.Path(), help="LoRA adapter folder."),
        click.option(
            "--sandbox",
            type=click.Choice(["auto", "docker", "local", "unsafe-local"]),
            default=None,
            help="Where generated code runs [default: auto]. unsafe-local runs it UNSANDBOXED here.",
        ),
        click.option(
            "--attempts",
            "max_attempts",
            type=click.IntRange(1, 20),
            default=None,
            help="Generation + repair attempts [default: 4].",
        ),
        click.option(
            "--no-retrieval",
            "retrieval",
            flag_value=False,
            default=None,
            help="Do not put retrieved docs in the prompt.",
        ),
        click.option("--index-path", default=None, type=click.Path(), help="Chroma index folder."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _resolve(options: dict[str, Any]) -> AgentConfig:
    from agent.config import resolve_config

    return resolve_config(options)


@click.group(cls=RagcoderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ragcoder")
def cli() -> None:
    """ragcoder: a local, private code-generation agent.

    It retrieves docs, writes code with a local model, runs it in a Docker sandbox and repairs it
    until its checks pass.
    """


@cli.command()
@click.argument("instruction")
@click.option("--tests", "tests", default=None, help="Python asserts the code must pass (or @FILE).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@_agent_options
def solve(instruction: str, tests: str | None, as_json: bool, **options: Any) -> None:
    """Solve one INSTRUCTION and print the code, its output and the attempts."""
    import json

    from agent.config import build_agent
    from agent.tasks import Task

    if tests and tests.startswith("@"):
        tests = Path(tests[1:]).read_text(encoding="utf-8")
    task = Task(id="cli", instruction=instruction, tests=tests)
    with build_agent(_resolve(options)) as agent:
        result = agent.invoke(task)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        print_result(result, backend=agent.sandbox.name)
    sys.exit(0 if result.passed else 2)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("results.jsonl"),
    show_default=True,
    help="JSONL results; a rerun skips ids already there.",
)
@click.option("--fresh", is_flag=True, help="Start over: remove OUTPUT first instead of resuming.")
@click.option("--show-code", is_flag=True, help="Print each task's final code.")
@_agent_options
def batch(input_path: Path, output: Path, fresh: bool, show_code: bool, **options: Any) -> None:
    """Run every task in INPUT (JSONL: id, instruction, tests?, entry_point?)."""
    from agent.batch import run_batch
    from agent.config import build_agent
    from agent.tasks import TaskError, read_jsonl_tasks

    if not input_path.is_file():
        raise TaskError(f"cannot read prompt file {input_path}: no such file")
    if fresh and output.exists():
        output.unlink()
    tasks = list(read_jsonl_tasks(input_path))

    def on_result(task_id: str, result: AgentResult | None, record: dict[str, Any]) -> None:
        if result is None:
            click.secho(f"[{task_id}] error: {record['error']}", fg="red")
            return
        status = click.style("PASSED" if result.passed else "FAILED", fg="green" if result.passed else "red")
        click.echo(
            f"[{task_id}] {status}  check={result.check}  repairs={result.repairs}  "
            f"{result.total_ms / 1000:.1f}s"
        )
        if show_code:
            print_code(result.code)

    with build_agent(_resolve(options)) as agent:
        click.echo(f"sandbox: {agent.sandbox.name}; {len(tasks)} tasks -> {output}")
        summary = run_batch(agent, tasks, output, on_result=on_result)
    click.echo(
        f"done: {summary.passed} passed, {summary.failed} failed, {summary.errors} errors, "
        f"{summary.skipped} already in {output}; {summary.seconds:.0f}s"
    )


@cli.group()
def config() -> None:
    """Show the resolved settings."""


@config.command("show")
def config_show() -> None:
    """Print every setting, its value and where it came from (flag, env, file, default)."""
    from dataclasses import fields

    from agent.config import AgentConfig, project_config_path, resolve_config, user_config_path

    resolved = resolve_config()
    click.echo(f"# user file:    {user_config_path()}")
    click.echo(f"# project file: {project_config_path()}")
    for f in fields(AgentConfig):
        if f.name != "sources":
            click.echo(f"{f.name} = {getattr(resolved, f.name)!r}  ({resolved.sources[f.name]})")


def print_code(code: str) -> None:
    from rich.console import Console
    from rich.syntax import Syntax

    Console().print(Syntax(code.rstrip(), "python", line_numbers=False, word_wrap=True))


def print_result(result: AgentResult, *, backend: str) -> None:
    from rich.console import Console

    console = Console()
    if result.sources:
        console.print("[dim]sources: " + "; ".join(result.sources) + "[/dim]")
    for attempt in result.attempts:
        mark = "[green]passed[/green]" if attempt.passed else "[red]failed[/red]"
        why = "" if attempt.passed else f": {attempt.feedback.splitlines()[0] if attempt.feedback else ''}"
        console.print(f"attempt {attempt.number} ({attempt.kind}) {mark}{why}", markup=True, highlight=False)
    print_code(result.code)
    console.rule(f"output (ran in the {backend} sandbox)")
    console.print(result.output.rstrip() or "[dim](no output)[/dim]", highlight=False)
    console.rule()
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"{verdict} check={result.check}, {result.repairs} repair(s), {result.total_ms / 1000:.1f}s"
    )


def _register_subcommands() -> None:
    """Command groups that live in agent/commands/ (each imports only click at module level)."""
    import importlib

    for module_name, attr in [
        ("agent.commands.models_cmd", "models"),
        ("agent.commands.sandbox_cmd", "sandbox"),
        ("agent.commands.index_cmd", "index"),
    ]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        cli.add_command(getattr(module, attr))


_register_subcommands()


def main() -> None:
    cli(prog_name="ragcoder")


if __name__ == "__main__":
    main()
