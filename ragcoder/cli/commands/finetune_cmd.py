"""``ragcoder eval humaneval`` and ``ragcoder finetune ...``: the evaluation harness, the training
data commands and LoRA training. Only click is imported at module level."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ragcoder.agent.defaults import DEFAULT_SAMPLES, MAX_SAMPLES
from ragcoder.cli.options import agent_options, exit_interrupted, fail, ray_option


def _command_line() -> str:
    return "ragcoder " + " ".join(shlex.quote(a) for a in sys.argv[1:])


# -- eval -----------------------------------------------------------------------------------------


@click.group("eval")
def eval_group() -> None:
    """Measure the agent by execution (HumanEval)."""


@eval_group.command("humaneval")
@click.option(
    "--split",
    type=click.Choice(["dev", "test", "all"]),
    default="dev",
    show_default=True,
    help="dev = tasks 0-81 (tune on these), test = 82-163 (report only).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N tasks of the split.")
@click.option(
    "--tasks", default=None, help="Only these tasks of the split, e.g. 1,5,HumanEval/6 (rerun failures)."
)
@click.option(
    "--prompt-style",
    type=click.Choice(["stub", "words"]),
    default="stub",
    show_default=True,
    help="stub: complete the prompt's function; words: the same task asked in words (its "
    "signature and docstring as prose), which the retrieval gate treats as a request.",
)
@click.option("--no-repair", is_flag=True, help="Single shot: one attempt, no repairs.")
@click.option(
    "--samples",
    type=click.IntRange(1, 200),
    default=1,
    show_default=True,
    help="Samples per task (n > 1 samples with temperature and reports pass@k).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0.01, 2.0),
    default=0.8,
    show_default=True,
    help="Sampling temperature when --samples > 1.",
)
@click.option(
    "--stuck-temperature",
    default=None,
    help="Repairs are sampled at this temperature (e.g. 0.8) [default: none, the candidates' temperature].",
)
@click.option(
    "--candidates",
    type=click.IntRange(1, MAX_SAMPLES),
    default=None,
    help="Candidates per round, chosen by running them against tests (the agent's samples setting) "
    f"[default: {DEFAULT_SAMPLES}].",
)
@click.option(
    "--own-tests/--no-own-tests",
    "generate_tests",
    default=None,
    help="With no tests in the task, the model writes tests to rank the candidates [default: on].",
)
@click.option("--max-new-tokens", type=click.IntRange(16), default=None, help="Generation budget per reply.")
@click.option(
    "--quantize",
    type=click.Choice(["auto", "int8", "none"]),
    default="auto",
    show_default=True,
    help="auto: int8 on CPU (fast for Qwen 1.5B); none: full precision (small models).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Tasks run concurrently (generations are batched).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("humaneval_results.jsonl"),
    show_default=True,
    help="Per-task JSONL; a rerun resumes.",
)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="Markdown report (a PNG plot is written beside it).",
)
@click.option("--fresh", is_flag=True, help="Empty OUTPUT first instead of resuming.")
@ray_option("Solve and score")
@agent_options(sandbox_default="docker", samples=False)  # the hidden tests run there; --samples: pass@k
def humaneval_cmd(
    split: str,
    limit: int | None,
    tasks: str | None,
    prompt_style: str,
    no_repair: bool,
    samples: int,
    temperature: float,
    stuck_temperature: str | None,
    candidates: int | None,
    generate_tests: bool | None,
    max_new_tokens: int | None,
    quantize: str,
    workers: int,
    output: Path,
    report: Path | None,
    fresh: bool,
    ray: str | None,
    **options: Any,
) -> None:
    """Solve HumanEval tasks from their prompts only; score with the hidden tests in the sandbox."""
    from contextlib import nullcontext

    from rich.markup import escape

    from ragcoder.agent.config import resolve_config
    from ragcoder.agent.records import ResultsFile, check_writable
    from ragcoder.cli.report import run_progress
    from ragcoder.finetune.evaluate import plan_eval, run_eval, select_problems
    from ragcoder.finetune.report import write_report

    flags = {**options, "max_new_tokens": max_new_tokens, "stuck_temperature": stuck_temperature, "ray": ray}
    flags.update(samples=candidates, generate_tests=generate_tests)  # unset (None): config and env decide
    if no_repair:
        flags["max_attempts"] = 1
    try:  # every setting and path is checked before the sandbox and the model start
        config = resolve_config(flags)
        problems = select_problems(split, limit, tasks)
        if report is not None:
            check_writable(report, "--report")
            check_writable(report.with_suffix(".png"), "--report (its plot)")
        results = ResultsFile.open(output, fresh=fresh)
    except Exception as exc:
        fail(exc)
    shown = click.format_filename(output)
    progress, on_start = run_progress(f"humaneval {split}", shown, "record(s)")
    bar, counts = progress.task_ids[0], {"passed": 0, "ran": 0}

    def on_result(record: dict[str, Any]) -> None:
        counts["ran"] += 1
        counts["passed"] += bool(record.get("passed"))
        task_id = escape(f"[{record['id']}]")
        if "error" in record:
            line = f"{task_id} [red]error[/red]: {escape(record['error'])}"
        else:
            mark = "[green]PASSED[/green]" if record["passed"] else "[red]FAILED[/red]"
            line = (
                f"{task_id} {mark} attempts={len(record['attempts'])} "
                f"{record['total_ms'] / 1000:.1f}s {escape(record.get('summary', ''))} {escape(record['hidden_detail'])}"
            )
        progress.console.print(line, highlight=False)
        progress.update(bar, advance=1, rate=f"{counts['passed'] / counts['ran']:.0%}")

    with results:
        plan = plan_eval(problems, samples, results.done)
        if config.ray and plan.to_solve:  # the agents live in Ray actors; this process writes the records
            from ragcoder.finetune.ray_eval import run_eval_on_ray

            click.echo(
                f"ray: {config.ray}, {workers} actor(s); model: {config.llm_url or config.model}; "
                f"{len(problems)} task(s) x {samples} sample(s); attempts: {config.max_attempts}"
            )
            with progress:
                summary = run_eval_on_ray(
                    config,
                    problems,
                    results,
                    address=config.ray,
                    workers=workers,
                    samples=samples,
                    temperature=temperature,
                    quantize=quantize,
                    prompt_style=prompt_style,
                    on_start=on_start,
                    on_result=on_result,
                )
        else:
            try:  # no model when every record is there already (a rerun for the report)
                agent = (
                    build_eval_agent(
                        config, workers=workers, samples=samples, temperature=temperature, quantize=quantize
                    )
                    if plan.to_solve
                    else nullcontext()
                )
            except Exception as exc:
                fail(exc)
            with agent:
                if plan.to_solve:
                    click.echo(
                        f"sandbox: {agent.sandbox.name}; model: {config.model}"
                        f"{' + ' + config.adapter if config.adapter else ''}; {len(problems)} task(s) x "
                        f"{samples} sample(s); attempts: {config.max_attempts}; retrieval: {config.retrieval}"
                        f"{' + API guesses' if config.retrieval_guess else ''}; "
                        f"candidates per round: {config.samples}; own tests: "
                        f"{'on' if config.generate_tests else 'off'}; repairs sampled at: "
                        f"{config.stuck_temperature or 'as the candidates'}"
                    )
                else:
                    click.echo(f"nothing to do: every record is in {shown} (--fresh starts over)")
                with progress:
                    summary = run_eval(
                        agent if plan.to_solve else None,
                        problems,
                        results,
                        samples=samples,
                        workers=workers,
                        on_start=on_start,
                        on_result=on_result,
                        prompt_style=prompt_style,
                    )
    chosen = f" (tasks {tasks})" if tasks else ""
    chosen += " asked in words" if prompt_style == "words" else ""
    title = f"HumanEval {split}{chosen}{f' (first {limit})' if limit else ''}: {config.model}" + (
        f" + {Path(config.adapter).name}" if config.adapter else ""
    )
    from ragcoder.finetune.report import markdown, read_records, summarise

    stats = summarise([r for r in read_records(output) if r["task_id"] in {p.task_id for p in problems}])
    click.echo(markdown(stats, title=title))
    if report is not None:
        write_report(output, report, title=title, command=_command_line())
        click.echo(f"report: {report} (plot: {report.with_suffix('.png')})")
    if summary.interrupted:
        exit_interrupted(shown)


def build_eval_agent(
    config: Any, *, workers: int, samples: int, temperature: float, quantize: str = "auto"
) -> Any:
    """The agent under evaluation, as ``ragcoder.agent.config.build_agent`` builds it, plus two knobs:
    ``quantize`` (int8 ruins a 135M model's output; fp32 is as fast there) and sampling for pass@k."""
    from ragcoder.cli.report import open_agent

    def sampled(chat: Any) -> tuple[Any, Any]:
        # the local chat model samples when given a temperature (top-p 0.95, the Codex paper's nucleus)
        model = chat.bind(temperature=temperature)
        return model, model

    return open_agent(config, workers=workers, quantize=quantize, models=sampled if samples > 1 else None)


@eval_group.command("report")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--report", type=click.Path(path_type=Path), required=True, help="Markdown file to write.")
@click.option("--title", default=None, help="Report title.")
def report_cmd(results: Path, report: Path, title: str | None) -> None:
    """Rewrite the Markdown report (and plot) of an existing eval RESULTS file."""
    from ragcoder.finetune.report import write_report

    stats = write_report(results, report, title=title or f"HumanEval: {results.name}")
    click.echo(f"{report}: pass@1 {stats.pass_at.get(1, 0):.1%} over {stats.tasks} task(s)")


# -- finetune -------------------------------------------------------------------------------------


@click.group("finetune")
def finetune_group() -> None:
    """Build execution-verified training data and train a LoRA adapter."""


@finetune_group.command(
    "train",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
)
@click.pass_context
def train_cmd(ctx: click.Context) -> None:
    """LoRA SFT (finetune/train.py): every option of `python -m ragcoder.finetune.train --help` is accepted,
    e.g. --data verified.jsonl --base smollm2-135m-instruct --out adapters/smol --max-steps 100 --merge."""
    from ragcoder.finetune.train import main

    main(list(ctx.args))


@finetune_group.group("data")
def data_group() -> None:
    """Write instruction -> code JSONL from four sources (never the HumanEval test split)."""


def _report(stats: Any, out: Path) -> None:
    click.echo(f"{out}: {stats.line()}")


@data_group.command("pairs")
@click.argument(
    "inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--no-parse-check", is_flag=True, help="Keep responses that are not valid Python.")
def pairs_cmd(inputs: tuple[Path, ...], output: Path, no_parse_check: bool) -> None:
    """(a) Validate and normalise your own instruction/response pairs (JSONL, several key spellings)."""
    from ragcoder.finetune.data import WriteStats, normalise_pairs, write_examples

    stats = WriteStats()
    rows = []
    for path in inputs:
        for item in normalise_pairs(path, require_parse=not no_parse_check):
            if isinstance(item, Exception):
                click.echo(f"skipped: {item}", err=True)
                stats.skip("invalid")
            else:
                rows.append(item)
    _report(write_examples(rows, output, stats), output)


@data_group.command("mine")
@click.argument("roots", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Stop after N pairs.")
def mine_cmd(roots: tuple[Path, ...], output: Path, limit: int | None) -> None:
    """(b) Docstring -> function pairs from Python sources (default: the stdlib and installed packages)."""
    from ragcoder.finetune.data import default_source_roots, mine_docstring_pairs, write_examples

    rows = mine_docstring_pairs(list(roots) or default_source_roots(), limit=limit)
    _report(write_examples(rows, output), output)


@data_group.command("traces")
@click.argument(
    "results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--repairs", is_flag=True, help="Also add 'fix this failing code' examples from repairs.")
@click.option(
    "--per-task",
    type=click.IntRange(1),
    default=None,
    help="Keep at most N distinct solutions per task, repaired ones first [default: all].",
)
@click.option(
    "--repaired-only",
    is_flag=True,
    help="Only solutions a repair produced: the model's first greedy answers teach it little "
    "(its own loss on them is about 0.05).",
)
def traces_cmd(
    results: tuple[Path, ...], output: Path, repairs: bool, per_task: int | None, repaired_only: bool
) -> None:
    """(c) Execution-verified solutions from batch/eval results JSONL (repaired ones included)."""
    from ragcoder.finetune.data import harvest_traces, repaired_first, write_examples

    rows = harvest_traces(results, repairs=repairs)
    if repaired_only:
        rows = (row for row in rows if not row["source"].endswith(":first-try"))
    if per_task is not None:
        rows = repaired_first(rows)
    _report(write_examples(rows, output, per_task=per_task), output)


@data_group.command("distill")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--teacher", default=None, help="The stronger model [default: the configured model].")
@click.option(
    "--attempts",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="The teacher may repair its solutions; only passing code is kept.",
)
@click.option("--limit", type=click.IntRange(1), default=None)
@click.option(
    "--sandbox", type=click.Choice(["auto", "docker", "local"]), default="docker", show_default=True
)
@click.option(
    "--results",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the teacher's eval JSONL goes (resumable) [default: OUTPUT.teacher.jsonl].",
)
def distill_cmd(
    output: Path, teacher: str | None, attempts: int, limit: int | None, sandbox: str, results: Path | None
) -> None:
    """(d) The teacher solves the HumanEval DEV split; solutions that pass the hidden tests are kept."""
    from ragcoder.agent.config import resolve_config
    from ragcoder.agent.records import ResultsFile, check_writable
    from ragcoder.cli.report import open_agent
    from ragcoder.finetune.data import harvest_traces, write_examples
    from ragcoder.finetune.evaluate import run_eval, select_problems

    results = results or output.with_suffix(".teacher.jsonl")
    config = resolve_config(
        {"model": teacher, "max_attempts": attempts, "retrieval": "never", "sandbox": sandbox}
    )
    problems = select_problems("dev", limit)  # never the test split
    check_writable(output, "-o")  # both paths before the teacher loads
    with ResultsFile.open(results, flag="--results") as teacher_results, open_agent(config) as agent:
        summary = run_eval(
            agent,
            problems,
            teacher_results,
            on_result=lambda r: click.echo(f"[{r['id']}] {'PASSED' if r.get('passed') else 'failed'}"),
        )
    click.echo(f"teacher: {summary.passed} passed, {summary.failed} failed ({summary.skipped} resumed)")
    _report(write_examples(harvest_traces([results]), output), output)


@data_group.command("humaneval-dev")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--sandbox", type=click.Choice(["auto", "docker", "local"]), default="docker", show_default=True
)
@click.option(
    "--except-tasks-in",
    "except_in",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Leave out the tasks this JSONL already covers (e.g. the model's own traces).",
)
def humaneval_dev_cmd(output: Path, sandbox: str, except_in: Path | None) -> None:
    """HumanEval DEV-split reference solutions that pass their tests in the sandbox (never the test split)."""
    from ragcoder.finetune.data import task_ids_in, verified_dev_references, write_examples
    from ragcoder.sandbox import open_sandbox

    skip = task_ids_in(except_in) if except_in else set()
    with open_sandbox(sandbox) as box:
        _report(write_examples(verified_dev_references(box, skip=skip), output), output)


@eval_group.command("rescore")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--sandbox", type=click.Choice(["auto", "docker", "local"]), default="docker", show_default=True
)
def rescore_cmd(results: Path, sandbox: str) -> None:
    """Re-run the hidden tests on the code already in RESULTS (after a scoring fix); no model needed."""
    from ragcoder.finetune.evaluate import rescore
    from ragcoder.sandbox import open_sandbox

    with open_sandbox(sandbox) as box:
        changed = rescore(results, box)
    click.echo(f"{results}: {changed} final verdict(s) changed")


@eval_group.command("compare")
@click.argument("runs", nargs=-1, required=True)
def compare_cmd(runs: tuple[str, ...]) -> None:
    """Side-by-side table of eval results on their common tasks; RUNS are NAME=results.jsonl."""
    from ragcoder.finetune.report import compare

    pairs = {}
    for item in runs:
        name, _, path = item.partition("=")
        if not path:
            raise click.UsageError(f"{item!r}: write NAME=path/to/results.jsonl")
        if not Path(path).is_file():
            raise click.UsageError(
                f"{path}: no such results file; run `ragcoder eval humaneval -o {path}` first"
            )
        pairs[name] = Path(path)
    click.echo(compare(pairs))
