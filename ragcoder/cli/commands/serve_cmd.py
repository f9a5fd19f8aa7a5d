"""``ragcoder serve``: one warm model for every command, behind an OpenAI-compatible API.

It listens on a unix socket in the user's runtime dir (``solve``, ``chat``, ``batch`` and ``eval``
find it there and use it when it holds the model they ask for), and on 127.0.0.1 with ``--port``
(0 picks a free port) for any OpenAI client: ``ChatOpenAI(base_url="http://127.0.0.1:PORT/v1")``.
One server per socket: a second ``serve`` on the same socket refuses and names the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click


@contextlib.contextmanager
def claim_socket(sock: Path) -> Iterator[None]:
    """Hold ``<socket>.lock`` while serving: a second server on the same socket refuses, and a
    socket file left by a server that was killed is replaced."""
    from ragcoder.chains.llm.served import probe
    from ragcoder.errors import ServeError

    sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(sock.with_name(sock.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = probe(socket=sock)
            who = f" (pid {info.pid}, model {info.model}, engine {info.engine})" if info else ""
            raise ServeError(
                f"a ragcoder server already listens on {sock}{who}",
                hint="use it (commands find it), stop it first, or pass --socket PATH for another one",
            ) from None
        sock.unlink(missing_ok=True)  # left by a server that did not exit cleanly
        try:
            yield
        finally:
            sock.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


@click.command("serve")
@click.option("--model", default=None, help="Known model name, HF or ONNX folder, or .gguf file.")
@click.option("--adapter", default=None, type=click.Path(), help="LoRA adapter folder.")
@click.option("--engine", default=None, help="torch | auto | ort [default: torch].")
@click.option(
    "--socket",
    "socket_opt",
    type=click.Path(path_type=Path),
    default=None,
    help="Unix socket to listen on [default: serve.sock in the user's runtime dir].",
)
@click.option("--no-socket", is_flag=True, help="Listen on TCP only (needs --port).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also listen on 127.0.0.1:PORT (0: a free port, printed) for OpenAI clients.",
)
@click.option("--max-new-tokens", type=click.IntRange(1), default=None, help="Default tokens per answer.")
@click.option(
    "--max-batch",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Most concurrent requests decoded as one batch.",
)
def serve(
    model: str | None,
    adapter: str | None,
    engine: str | None,
    socket_opt: Path | None,
    no_socket: bool,
    port: int | None,
    max_new_tokens: int | None,
    max_batch: int,
) -> None:
    """Hold one model warm and answer OpenAI-style chat completions (streaming too) until Ctrl-C."""
    from ragcoder.agent.config import resolve_config
    from ragcoder.chains.llm.engines import adapter_id, load_chat
    from ragcoder.chains.llm.served import served_name, socket_path
    from ragcoder.cli.openai_server import ChatService, make_servers, serve_all
    from ragcoder.errors import ServeError

    if no_socket and port is None:
        raise ServeError("--no-socket leaves nothing to listen on", hint="add --port PORT (0: a free one)")
    config = resolve_config(
        {"model": model, "adapter": adapter, "engine": engine, "max_new_tokens": max_new_tokens}
    )
    sock = None if no_socket else (socket_opt or socket_path())
    claim = claim_socket(sock) if sock else contextlib.nullcontext()
    with claim:
        started = time.perf_counter()
        chat: Any = load_chat(
            config.model,
            engine=config.engine,
            adapter=config.adapter,
            max_new_tokens=config.max_new_tokens,
            batch_size=max_batch,
        )
        chat.invoke("Say OK.", max_new_tokens=1)  # the first run sets up buffers: not on a client's time
        chosen = getattr(chat, "engine", "torch")
        service = ChatService(
            chat,
            model=served_name(config.model),
            engine=chosen,
            adapter=adapter_id(config.adapter) if config.adapter else None,
            max_batch=max_batch,
        )
        servers = make_servers(service, socket=str(sock) if sock else None, port=port)
        where = [f"unix:{sock}"] if sock else []
        if port is not None:
            where.append(f"http://127.0.0.1:{servers[-1].server_address[1]}/v1")
        click.echo(
            f"ragcoder serve: {config.model} on {chosen}, ready in {time.perf_counter() - started:.1f}s; "
            f"listening on {' and '.join(where)} (Ctrl-C stops)"
        )
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            serve_all(servers)
        except KeyboardInterrupt:
            click.echo("ragcoder serve: stopped")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
