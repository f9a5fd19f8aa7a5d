"""``ragcoder index PATH... [--stdlib]``: build or update the retrieval index; ``ragcoder search
QUERY``: what the retriever finds in it."""

from __future__ import annotations

from pathlib import Path

import click


def _served_index(index_url: str | None) -> Path | None:
    """The stand-in folder of the Chroma server named by --index-url, else by the index_url setting."""
    from ragcoder.agent.config import resolve_config

    url = resolve_config({"index_url": index_url}).index_url
    if not url:
        return None
    from ragcoder.chains.retrieval.remote_index import remote_index_path

    return remote_index_path(url)


def load_embeddings(model_path: str | None = None):
    from ragcoder.chains.retrieval.embeddings import load_embeddings as load

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
@click.option(
    "--index-url",
    default=None,
    metavar="URL",
    help="A Chroma server (`chroma run --path DIR --port P`) instead of the folder [default: index_url].",
)
@click.option(
    "--embedder",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A sentence-transformers folder (default: all-MiniLM-L6-v2).",
)
@click.option("--rebuild", is_flag=True, help="Delete the index first and embed everything again.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def index(
    paths: tuple[Path, ...],
    stdlib: bool,
    index_path: Path | None,
    index_url: str | None,
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
    from ragcoder.chains.retrieval.indexing import IndexMismatchError, delete_index, index_paths, index_stdlib

    index_path = _served_index(index_url) or index_path
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


@click.command("search")
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(1, 100), default=5, show_default=True, help="How many results.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "bm25"]), default="hybrid", show_default=True)
@click.option(
    "--guess-apis",
    is_flag=True,
    help="Let the default model name the APIs first (hybrid only; loads the model, then ~1 s).",
)
@click.option(
    "--index-path",
    type=click.Path(path_type=Path),
    default=None,
    help="Index folder (default: user data dir).",
)
@click.option("--index-url", default=None, metavar="URL", help="A Chroma server [default: index_url].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result.")
def search(
    query: str,
    k: int,
    mode: str,
    guess_apis: bool,
    index_path: Path | None,
    index_url: str | None,
    as_json: bool,
) -> None:
    """Show what the agent's retriever finds for QUERY: symbol, file and lines, score, first line."""
    import json

    from ragcoder.agent.tasks import clean_text

    if not query.strip():  # every chunk is equally near an empty query: the results would be arbitrary
        raise click.ClickException(
            "the query is empty: say what to look for, e.g. ragcoder search 'read a csv file'"
        )
    query = clean_text(query)  # bytes that are not UTF-8 (from argv) would break the embedder

    from ragcoder.chains.retrieval.indexing import IndexMismatchError, open_collection, resolve_index_path
    from ragcoder.chains.retrieval.retriever import open_retriever

    path = resolve_index_path(_served_index(index_url) or index_path)
    collection = open_collection(path, None, create=False)
    if collection is None or collection.count() == 0:
        raise click.ClickException(
            f"the index at {path} is empty: build it with `ragcoder index --stdlib` or `ragcoder index PATH`"
        )
    try:
        retriever = open_retriever(path, k=k, mode=mode, embeddings=load_embeddings())  # type: ignore[arg-type]
        guesses: list[str] = []
        if guess_apis:
            from langchain_core.runnables import RunnableLambda

            from ragcoder.chains.retrieval.api_guess import load_api_guesser

            guesser = load_api_guesser()
            guesses = guesser.invoke(query)
            retriever.api_guesser = RunnableLambda(lambda _: guesses)
        docs = retriever.invoke(query)
    except (IndexMismatchError, FileNotFoundError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if guess_apis and not as_json:
        click.echo(f"model's guesses: {', '.join(guesses) or '(none)'}")
    for rank, doc in enumerate(docs, 1):
        meta = doc.metadata
        lines = f":{meta['start_line']}-{meta['end_line']}" if meta.get("start_line") else ""
        first = next((line.strip() for line in doc.page_content.splitlines() if line.strip()), "")
        if as_json:
            click.echo(json.dumps({"rank": rank, **meta, "text": doc.page_content}))
        else:
            click.echo(
                f"{rank:>2}. {meta.get('symbol') or '-'}  ({meta.get('source', '?')}{lines}, "
                f"score {meta.get('score', 0):.3f})\n    {first[:100]}"
            )
