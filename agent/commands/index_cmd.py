"""``ragcoder index PATH... [--stdlib] [--index-path P]``: build or update the retrieval index."""

from __future__ import annotations

from pathlib import Path

import click


def load_embeddings(model_path: str | None = None):
    from chains.embeddings import load_embeddings as load

    return load(model_path)


@click.command("index")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--stdlib", is_flag=True, help="Index the standard library's documentation (pydoc, a few minutes)."
)
@click.option(
    "--index-path",
    type=click.Path(path_type=Path),
    default=None,
    help="Index folder (default: user data dir).",
)
@click.option("--embedder", type=click.Path(exists=True, file_okay=False), default=None,
              help="A sentence-transformers folder (default: all-MiniLM-L6-v2).")  # fmt: skip
@click.option("--rebuild", is_flag=True, help="Delete the index first and embed everything again.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index(
    paths: tuple[Path, ...],
    stdlib: bool,
    index_path: Path | None,
    embedder: str | None,
    rebuild: bool,
    quiet: bool,
) -> None:
    """Index code and docs under PATH... (Python by function/class, Markdown/reST by heading).

    Re-running is incremental: unchanged files are skipped, changed ones re-embedded, deleted ones
    removed. HumanEval files are never indexed.
    """
    if not paths and not stdlib:
        raise click.UsageError("Nothing to index: give one or more PATHs, or --stdlib for the stdlib docs.")
    from chains.indexing import IndexMismatchError, delete_index, index_paths, index_stdlib

    try:
        embeddings = load_embeddings(embedder)
        if rebuild:
            delete_index(index_path)
        if stdlib:
            stats = index_stdlib(index_path=index_path, embeddings=embeddings, progress=not quiet)
            click.echo(f"stdlib: {stats.summary()}")
        if paths:
            stats = index_paths(paths, index_path=index_path, embeddings=embeddings, progress=not quiet)
            click.echo(f"files: {stats.summary()}")
    except (IndexMismatchError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
