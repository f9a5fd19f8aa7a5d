"""What the commands share: the agent's flags, the one-line error exit and the interrupted exit.
Only click is imported."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import click

from ragcoder.agent.defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_SAMPLES, MAX_SAMPLES

SANDBOX_CHOICES = ("auto", "docker", "local", "unsafe-local")


def fail(exc: BaseException) -> NoReturn:
    """``error: <exc>`` (and ``hint: <exc.hint>``) on stderr, exit status 1."""
    click.echo(f"error: {exc}", err=True)
    if hint := getattr(exc, "hint", ""):
        click.echo(f"hint: {hint}", err=True)
    sys.exit(1)


def exit_interrupted(results: str) -> NoReturn:
    """After Ctrl-C, with the finished records written and the sandboxes closed: say where they are
    and exit 130 now. Worker threads still inside a generation cannot be stopped, and a normal exit
    would wait (at full CPU) until each finished its task, minutes on a CPU."""
    click.echo(f"interrupted: finished tasks are in {results}; rerun the same command to resume.", err=True)
    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


def agent_options(*, sandbox_default: str | None = None, samples: bool = True) -> Callable[[Any], Any]:
    """Flags shared by solve, batch, chat and eval; unset flags (None) leave config files and env in
    charge. ``sandbox_default`` pins the sandbox unless the flag is given (eval: docker).
    ``samples``: add --samples (candidates per round); eval's own --samples counts pass@k samples."""
    options = [
        click.option("--model", default=None, help="Known model name, HF folder or .gguf file."),
        click.option("--adapter", default=None, type=click.Path(), help="LoRA adapter folder."),
        click.option(
            "--engine",
            default=None,
            help="Generation engine: torch | auto | ort [default: torch]; auto: ONNX Runtime int4 when installed.",
        ),
        click.option(
            "--server",
            default=None,
            help="A `ragcoder serve` URL to generate with; off: load the model here [default: the "
            "running server on the user's socket, if it holds the model].",
        ),
        click.option(
            "--sandbox",
            type=click.Choice(SANDBOX_CHOICES),
            default=sandbox_default,
            help=f"Where generated code runs [default: {sandbox_default or 'auto'}]. "
            "unsafe-local runs it UNSANDBOXED here.",
        ),
        click.option(
            "--attempts",
            "max_attempts",
            type=click.IntRange(1, 20),
            default=None,
            help=f"Generation + repair attempts [default: {DEFAULT_MAX_ATTEMPTS}].",
        ),
        click.option(
            "--retrieval",
            type=click.Choice(["auto", "always", "never"]),
            default=None,
            help="Retrieved docs in the prompt: auto (not for self-contained function stubs), "
            "always or never [default: auto].",
        ),
        click.option(
            "--no-retrieval",
            "retrieval",
            flag_value="never",
            default=None,
            help="Same as --retrieval never.",
        ),
        click.option(
            "--guess-apis/--no-guess-apis",
            "retrieval_guess",
            default=None,
            help="Let the model name the APIs a request needs before searching the index: finds "
            "docs worded unlike the request, one short generation more [default: off].",
        ),
        click.option("--index-path", default=None, type=click.Path(), help="Chroma index folder."),
        click.option(
            "--llm-url",
            default=None,
            metavar="URL",
            help="An OpenAI-compatible server (ragcoder serve, vLLM, llama.cpp, Ollama) instead of "
            "the local model; --model then names the served model [default: its first].",
        ),
        click.option(
            "--index-url",
            default=None,
            metavar="URL",
            help="A Chroma server (`chroma run --path DIR --port P`) instead of the index folder.",
        ),
        click.option(
            "--docker-host",
            "docker_hosts",
            multiple=True,
            metavar="URL",
            callback=lambda ctx, param, value: value or None,  # none given: the files and env decide
            help="A Docker engine for the sandboxes (unix://, tcp://, ssh://); repeat for several: "
            "runs go to the least busy one.",
        ),
        click.option(
            "--always-sample/--no-always-sample",
            "always_sample",
            default=None,
            help="Sample every round's candidates even when the first one passes your tests, the "
            "request's examples or, with neither, its own tests [default: off: that one is the answer].",
        ),
        click.option(
            "--confirm-examples/--no-confirm-examples",
            "confirm_examples",
            default=None,
            help="A first candidate that passes the request's examples also runs the model's own tests, "
            "and others are sampled when it fails many [default: off].",
        ),
    ]
    if samples:
        options.append(
            click.option(
                "--samples",
                type=click.IntRange(1, MAX_SAMPLES),
                default=None,
                help=f"Candidates per round, chosen by running them against tests [default: {DEFAULT_SAMPLES}].",
            )
        )

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def ray_option(what: str) -> Any:
    """``--ray [ADDRESS|local]``: ``what`` says what the Ray actors do (batch and eval)."""
    return click.option(
        "--ray",
        "ray",
        default=None,
        is_flag=False,
        flag_value="local",
        metavar="[ADDRESS|local]",
        help=f"{what} on --workers Ray actors: `--ray` alone starts Ray here, ADDRESS joins a cluster "
        "(`ray start --head`).",
    )
