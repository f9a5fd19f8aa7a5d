"""The `ragcoder` command: a thin layer over the library (`ragcoder.agent`). Heavy imports happen inside commands."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ragcoder.cli.options import agent_options, exit_interrupted, fail, ray_option

if TYPE_CHECKING:
    from ragcoder.agent.config import AgentConfig
    from ragcoder.agent.loop import AgentEvent
    from ragcoder.agent.result import AgentResult

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is never needed: models come from our cache
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Must be set before torch is first imported: with the default busy-wait policy, torch threads
# spin against each other on a loaded machine (see chains/llm/chat_model.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _is_ours(exc: BaseException) -> bool:
    from ragcoder.errors import RagcoderError

    return isinstance(exc, RagcoderError)


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
            fail(exc)


def _resolve(options: dict[str, Any]) -> AgentConfig:
    from ragcoder.agent.config import resolve_config

    return resolve_config(options)


@click.group(cls=RagcoderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ragcoder")
def cli() -> None:
    """ragcoder: a local, private code-generation agent.

    It retrieves docs, writes code with a local model, runs it in a Docker sandbox and repairs it
    until its checks pass.
    """


_FILE_OPTION = click.option(
    "--file",
    "input_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An input file the code can open from its working folder (repeatable).",
)
_OUT_DIR_OPTION = click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    default=Path("ragcoder-output"),
    show_default=True,
    help="Where files the code writes (plots, tables) are saved.",
)


def _with_inputs(agent: Any, paths: tuple[Path, ...]) -> str:
    """Hand ``--file`` inputs to every run of ``agent``; returns the note for the instruction."""
    from ragcoder.sandbox.files import inputs_note, read_input_files

    if not paths:
        return ""
    files = read_input_files(paths)
    agent.sandbox.inputs = files  # ImageRouter: written into /work before each run
    return inputs_note(files)


@cli.command()
@click.argument("instruction")
@click.option("--tests", "tests", default=None, help="Python asserts the code must pass (or @FILE).")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@_FILE_OPTION
@_OUT_DIR_OPTION
@agent_options()
def solve(
    instruction: str,
    tests: str | None,
    as_json: bool,
    input_files: tuple[Path, ...],
    out_dir: Path,
    **options: Any,
) -> None:
    """Solve one INSTRUCTION and print the code, its output and the attempts."""
    import json

    from rich.console import Console

    from ragcoder.agent.tasks import Task, check_instruction, read_tests
    from ragcoder.cli.report import open_agent
    from ragcoder.sandbox.files import read_input_files, save_outputs

    config = _resolve(options)  # settings, instruction and tests are all checked before a model loads
    instruction = check_instruction(instruction, config.max_instruction_chars)
    tests = read_tests(tests)
    read_input_files(input_files)  # a bad --file fails before the model loads
    from ragcoder.cli.chat import run_live, token_printer  # after the checks: it imports LangChain

    console = Console()
    live = not as_json and console.is_terminal  # a person watching: show each step as it happens
    with open_agent(config) as agent:
        note = _with_inputs(agent, input_files)
        full = instruction + (f"\n\n{note}" if note else "")
        task = Task(id="cli", instruction=check_instruction(full, config.max_instruction_chars), tests=tests)
        result = run_live(agent, task, console, *token_printer(console)) if live else agent.invoke(task)
    final = result.attempts[-1].result if result.attempts else None
    saved = save_outputs(final.files, out_dir) if final is not None else []
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "outputs": [str(f.path) for f in saved]}, indent=2))
    else:
        print_result(result, backend=agent.sandbox.name, steps_shown=live)
        for line in [f.describe() for f in saved] + ([final.missing] if final and final.missing else []):
            click.echo(line)
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "humaneval", "text", "folder"]),
    default=None,
    help="Input format [default: detected].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Tasks run concurrently (generation is batched across them).",
)
@click.option(
    "--report", type=click.Path(path_type=Path), default=None, help="Also write the summary as Markdown."
)
@click.option("--fresh", is_flag=True, help="Start over: empty OUTPUT first instead of resuming.")
@click.option("--show-code", is_flag=True, help="Print each task's final code.")
@ray_option("Solve the tasks (each actor with its own sandbox and model, or --llm-url)")
@agent_options()
def batch(
    input_path: Path,
    output: Path,
    fmt: str | None,
    workers: int,
    report: Path | None,
    fresh: bool,
    show_code: bool,
    ray: str | None,
    **options: Any,
) -> None:
    """Run every task in INPUT: JSONL (id, instruction, tests?, entry_point?), HumanEval JSONL,
    plain text (one instruction per paragraph) or a folder of .txt/.md files."""
    from contextlib import nullcontext

    from rich.markup import escape

    from ragcoder.agent.batch import plan_batch, run_batch
    from ragcoder.agent.records import ResultsFile, check_writable
    from ragcoder.agent.tasks import read_tasks
    from ragcoder.cli.report import open_agent, print_summary, run_progress, write_markdown_report
    from ragcoder.errors import TaskError

    # everything that can be wrong with the input, the settings or the paths fails here, in one
    # line, before the sandbox and the model start (tens of seconds)
    config = _resolve({**options, "ray": ray})
    tasks = list(read_tasks(input_path, fmt, config.max_instruction_chars))
    if not tasks:  # an error rather than "0 tasks, rc 0": an empty input is a wrong or unfinished file
        raise TaskError(
            f"{input_path} holds no tasks: one JSON object per line, or one instruction per paragraph"
        )
    if report is not None:
        check_writable(report, "--report")
    shown = click.format_filename(output)
    with ResultsFile.open(output, fresh=fresh) as results:
        plan = plan_batch(tasks, results.done)
        if not plan.jobs:
            click.echo(f"nothing to do: all {plan.total} tasks are in {shown} (--fresh starts over)")
        progress, on_start = run_progress("batch", shown)
        bar, counts = progress.task_ids[0], {"passed": 0, "ran": 0}

        def on_result(task_id: str, result: AgentResult | None, record: dict[str, Any]) -> None:
            if result is None:
                progress.console.print(
                    f"[red]{escape(f'[{task_id}]')} error:[/red] {escape(record['error'])}", highlight=False
                )
            else:
                counts["ran"] += 1
                counts["passed"] += result.passed
                status = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
                progress.console.print(
                    f"{escape(f'[{task_id}]')} {status}  check={result.check}  "
                    f"repairs={result.repairs}  {result.total_ms / 1000:.1f}s  {escape(result.summary())}",
                    highlight=False,
                )
                if show_code:
                    print_code(record["code"], console=progress.console)
            rate = f"{counts['passed'] / counts['ran']:.0%}" if counts["ran"] else "-"
            progress.update(bar, advance=1, rate=rate)

        def on_step(task_id: str, event: AgentEvent) -> None:
            """Per-attempt progress: each failed attempt as it happens (the task's line comes at its end)."""
            if event.kind == "ran" and not event.data["passed"]:
                report, run = event.data["report"], event.data["result"]
                why = report.summary() if report is not None else run.failure_summary()
                first = report.failed[0] if report is not None and report.failed else None
                why += f"; {first.name}: {first.message}" if first is not None else ""
                progress.console.print(
                    f"{escape(f'[{task_id}]')} attempt {event.attempt} failed: {escape(why[:300])}",
                    highlight=False,
                    style="dim",
                )

        if config.ray and plan.to_solve:  # the agents live in Ray actors; this process writes the records
            from ragcoder.agent.ray_runner import run_batch_on_ray

            click.echo(f"ray: {config.ray}, {workers} actor(s); {len(tasks)} tasks -> {shown}")
            with progress:
                summary = run_batch_on_ray(
                    config,
                    tasks,
                    results,
                    address=config.ray,
                    workers=workers,
                    on_start=on_start,
                    on_result=on_result,
                )
        else:  # no model when nothing is left to solve (a finished run, or only bad lines to record)
            with open_agent(config, workers=workers) if plan.to_solve else nullcontext() as agent:
                where = f"sandbox: {agent.sandbox.name}; " if agent is not None else ""
                click.echo(f"{where}{len(tasks)} tasks -> {shown}")
                with progress:
                    summary = run_batch(
                        agent,
                        tasks,
                        results,
                        workers=workers,
                        on_start=on_start,
                        on_result=on_result,
                        on_step=on_step,
                    )
    print_summary(summary)
    if report is not None:
        write_markdown_report(summary, report, title=f"ragcoder batch: {input_path}", results=output)
    if summary.interrupted:
        exit_interrupted(shown)


@cli.command()
@_FILE_OPTION
@_OUT_DIR_OPTION
@click.option(
    "--session",
    "session_name",
    metavar="NAME",
    help="Keep the conversation under NAME and resume it when NAME is given again.",
)
@agent_options()
def chat(input_files: tuple[Path, ...], out_dir: Path, session_name: str | None, **options: Any) -> None:
    """Interactive chat: instructions and follow-ups, with /commands (/help lists them)."""
    from rich.console import Console

    from ragcoder.agent.config import index_location
    from ragcoder.cli.chat import run_chat
    from ragcoder.cli.chat_sessions import ChatSessionStore
    from ragcoder.cli.report import open_agent
    from ragcoder.sandbox.files import read_input_files

    read_line = _line_reader()
    config = _resolve(options)
    read_input_files(input_files)  # a bad --file fails before the model loads
    session = ChatSessionStore.named(session_name) if session_name else None
    if session is not None:
        session.load()  # an unreadable session file fails before the model loads too
    with open_agent(config) as agent:
        note = _with_inputs(agent, input_files)

        def switch_model(spec: str) -> str:
            from ragcoder.chains.llm.chat_model import repair_model
            from ragcoder.chains.llm.served import open_chat_model

            if config.llm_url:  # another model of the same server
                from ragcoder.chains.llm.remote import load_remote_chat_model

                served = load_remote_chat_model(
                    config.llm_url, model=spec, max_new_tokens=config.max_new_tokens
                )
                agent.set_model(served, served.for_repairs())
                return f"model: {spec} at {config.llm_url}"
            chat = open_chat_model(
                spec, engine=config.engine, server=config.server, max_new_tokens=config.max_new_tokens
            )
            agent.set_model(chat, repair_model(chat))
            return f"model: {spec}"

        run_chat(
            agent,
            read_line,
            Console(),
            switch_model=switch_model,
            index_paths=_index_paths(index_location(config)),
            inputs_note=note,
            outputs_dir=out_dir,
            max_instruction_chars=config.max_instruction_chars,
            session=session,
        )


def _line_reader() -> Any:
    """prompt_toolkit (line editing, history file) on a terminal; plain stdin otherwise. Bytes that
    are not UTF-8 become U+FFFD (the tokenizer refuses the lone surrogates Python makes of them)."""
    from ragcoder.agent.tasks import clean_text

    if sys.stdin.isatty() and sys.stdout.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory

        from ragcoder.chains.paths import data_dir

        data_dir().mkdir(parents=True, exist_ok=True)
        session: Any = PromptSession(history=FileHistory(str(data_dir() / "chat_history")))

        def read_tty(prompt: str) -> str | None:
            try:
                return clean_text(session.prompt(prompt))
            except EOFError:
                return None

        return read_tty

    if isinstance(sys.stdin, io.TextIOWrapper):  # strict or surrogateescape, per locale: replace
        sys.stdin.reconfigure(errors="replace")

    def read_stdin(prompt: str) -> str | None:
        line = sys.stdin.readline()
        return clean_text(line) if line else None

    return read_stdin


def _index_paths(index_path: str | None) -> Any:
    def index(paths: list[str]) -> str:
        from ragcoder.chains.retrieval.indexing import index_paths

        stats = index_paths([Path(p) for p in paths], index_path=index_path, progress=False)
        return f"indexed: {stats}"

    return index


@cli.group()
def config() -> None:
    """Show the resolved settings."""


@config.command("show")
def config_show() -> None:
    """Print every setting, its value and where it came from (flag, env, file, default)."""
    from dataclasses import fields

    from ragcoder.agent.config import AgentConfig, project_config_path, resolve_config, user_config_path

    resolved = resolve_config()
    click.echo(f"# user file:    {user_config_path()}")
    click.echo(f"# project file: {project_config_path()}")
    for f in fields(AgentConfig):
        if f.name != "sources":
            click.echo(f"{f.name} = {getattr(resolved, f.name)!r}  ({resolved.sources[f.name]})")


def print_code(code: str, console: Any = None) -> None:
    from rich.console import Console
    from rich.syntax import Syntax

    (console or Console()).print(Syntax(code.rstrip(), "python", line_numbers=False, word_wrap=True))


def print_result(result: AgentResult, *, backend: str, steps_shown: bool = False) -> None:
    """The answer: its sources and attempts (unless shown live already), code, output, verdict."""
    from rich.console import Console

    console = Console()
    shown = steps_shown and bool(result.attempts) and result.attempts[-1].code == result.code
    if steps_shown:
        if not shown:
            console.rule("final code")
    elif result.sources:
        console.print("[dim]sources: " + "; ".join(result.sources) + "[/dim]")
    elif result.retrieval.startswith("skipped"):
        console.print(f"[dim]no docs: {result.retrieval.removeprefix('skipped: ')}[/dim]")
    for attempt in [] if steps_shown else result.attempts:
        mark = "[green]passed[/green]" if attempt.passed else "[red]failed[/red]"
        why = "" if attempt.passed else f": {attempt.feedback.splitlines()[0] if attempt.feedback else ''}"
        console.print(f"attempt {attempt.number} ({attempt.kind}) {mark}{why}", markup=True, highlight=False)
    if not shown:  # shown live already, as the last attempt
        print_code(result.code)
    console.rule(f"output (ran in the {backend} sandbox)")
    console.print(result.output.rstrip() or "[dim](no output)[/dim]", highlight=False)
    console.rule()
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    console.print(
        f"{verdict} check={result.check}, {result.repairs} repair(s), {result.total_ms / 1000:.1f}s"
    )
    console.print(result.summary() + "".join(f"; {note}" for note in result.notes), highlight=False)


def _register_subcommands() -> None:
    """Command groups that live in ragcoder/cli/commands/ (each imports only click at module level)."""
    from ragcoder.cli.commands.finetune_cmd import eval_group, finetune_group
    from ragcoder.cli.commands.index_cmd import index, search
    from ragcoder.cli.commands.models_cmd import models
    from ragcoder.cli.commands.sandbox_cmd import sandbox
    from ragcoder.cli.commands.serve_cmd import serve

    for command in (models, sandbox, index, search, eval_group, finetune_group, serve):
        cli.add_command(command)


_register_subcommands()


def main() -> None:
    cli(prog_name="ragcoder")


if __name__ == "__main__":
    main()
