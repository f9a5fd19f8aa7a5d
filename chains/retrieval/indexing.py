"""Build and update the persistent Chroma index of code and docs, incrementally.

Each file (or stdlib module) is one *unit* with a content hash stored on its chunks: unchanged units
are skipped, changed ones re-embedded, and units that disappeared from an indexed folder are removed.
Chroma never embeds anything itself (its default embedder downloads a model): vectors are always
computed here with our ``Embeddings`` and passed explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcoder.chains.retrieval import remote_index
from ragcoder.chains.retrieval.source_files import file_problem, is_excluded, iter_files, shown_path
from ragcoder.chains.retrieval.splitters import SPLITTER_VERSION, Chunk, split_file

from ragcoder.errors import IndexMismatchError, IndexUnavailable

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

COLLECTION_NAME = "ragcoder"
STATE_FILE = "ragcoder-index.json"
EMBED_BATCH_CHUNKS = 128


@dataclass
class IndexStats:
    index_path: str
    units_seen: int = 0
    units_indexed: int = 0
    units_unchanged: int = 0
    units_removed: int = 0
    units_excluded: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # "name: why", each also logged as a warning

    def summary(self) -> str:
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (
            f"{self.units_indexed} indexed, {self.units_unchanged} unchanged, {self.units_removed} removed, "
            f"{self.units_excluded} excluded{skipped}; +{self.chunks_added}/-{self.chunks_removed} chunks "
            f"in {self.seconds:.1f} s -> {self.index_path}"
        )


def _skip_note(source: str | Path, why: str) -> str:
    """Warn that ``source`` is skipped and why; returns the line for ``IndexStats.skipped``."""
    shown = shown_path(source)
    log.warning("skipping %s: %s", shown, why)
    return f"{shown}: {why}"


@dataclass
class Unit:
    source: str
    content_hash: str
    load_chunks: Callable[[], list[Chunk]]


# -- the Chroma store -----------------------------------------------------------------------------

_clients_lock = threading.Lock()
_clients: dict[str, ClientAPI] = {}


def resolve_index_path(index_path: str | Path | None) -> Path:
    if index_path is None:
        from ragcoder.chains.paths import index_dir

        return index_dir()
    return Path(index_path).expanduser().resolve()


def get_client(index_path: str | Path | None = None) -> ClientAPI:
    """One ``PersistentClient`` per index folder per process (two with other settings would raise);
    for the stand-in folder of a Chroma server (``remote_index.remote_index_path``), its ``HttpClient``."""
    path = resolve_index_path(index_path)
    url = remote_index.url_for(path)
    if url is not None:
        return remote_index.remote_client(url)
    with _clients_lock:
        if str(path) not in _clients:
            import chromadb
            from chromadb.config import Settings

            path.mkdir(parents=True, exist_ok=True)
            _clients[str(path)] = chromadb.PersistentClient(
                path=str(path), settings=Settings(anonymized_telemetry=False)
            )
        return _clients[str(path)]


def index_exists(index_path: str | Path | None = None) -> bool:
    path = resolve_index_path(index_path)
    return remote_index.url_for(path) is not None or (path / "chroma.sqlite3").is_file()


def open_collection(
    index_path: str | Path | None,
    embeddings: Embeddings | None,
    *,
    create: bool,
    collection_name: str = COLLECTION_NAME,
) -> Collection | None:
    """The index collection, or None when it does not exist and ``create`` is false.

    The embedder's name is stored on the collection; opening with a different one raises
    ``IndexMismatchError`` (mixing vector spaces silently returns garbage).
    """
    from ragcoder.chains.retrieval.embeddings import embedder_id

    if not create and not index_exists(index_path):
        return None
    client = get_client(index_path)
    if not create:
        try:
            collection = client.get_collection(collection_name, embedding_function=None)
        except IndexUnavailable:  # a server that does not answer is not an empty index
            raise
        except Exception:  # chromadb raises NotFoundError/ValueError depending on version
            return None
    else:
        metadata = {
            "embedder": embedder_id(embeddings) if embeddings else "none",
            "splitter": SPLITTER_VERSION,
        }
        collection = client.get_or_create_collection(
            collection_name,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata=metadata,
        )
    if embeddings is not None:
        check_embedder(collection, embeddings, index_path)
    return collection


def check_embedder(collection: Collection, embeddings: Embeddings, index_path: str | Path | None) -> None:
    """Raise ``IndexMismatchError`` when the collection was built with another embedder."""
    from ragcoder.chains.retrieval.embeddings import embedder_id

    stored = (collection.metadata or {}).get("embedder")
    if stored not in (None, "none", embedder_id(embeddings)):
        raise IndexMismatchError(
            f"The index at {resolve_index_path(index_path)} was built with embedder {stored!r}, not "
            f"{embedder_id(embeddings)!r}: use the same embedder or rebuild with `ragcoder index --rebuild`."
        )


def index_generation(index_path: str | Path | None = None) -> str:
    """Changes whenever the indexer writes; the retriever rebuilds its BM25 index when it does."""
    url = remote_index.url_for(resolve_index_path(index_path))
    if url is not None:  # kept on the server: other machines write too
        return remote_index.read_generation(url)
    try:
        return json.loads((resolve_index_path(index_path) / STATE_FILE).read_text())["generation"]
    except (OSError, ValueError, KeyError):
        return ""


def _bump_generation(index_path: Path) -> None:
    state = {"generation": uuid.uuid4().hex, "updated": time.time()}
    url = remote_index.url_for(index_path)
    if url is not None:
        return remote_index.write_generation(url, state["generation"])
    (index_path / STATE_FILE).write_text(json.dumps(state))


def delete_index(index_path: str | Path | None = None, collection_name: str = COLLECTION_NAME) -> None:
    path = resolve_index_path(index_path)
    if index_exists(path):
        client = get_client(path)
        if collection_name in {getattr(c, "name", c) for c in client.list_collections()}:
            client.delete_collection(collection_name)
        _bump_generation(path)


# -- units ----------------------------------------------------------------------------------------


def _hash(*parts: str | bytes) -> str:
    digest = hashlib.sha256(SPLITTER_VERSION.encode())
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def _file_unit(path: Path, data: bytes) -> Unit:
    text = data.decode("utf-8", errors="replace")
    return Unit(str(path), _hash(data), lambda: split_file(str(path), text))


# -- syncing units into the collection ------------------------------------------------------------


def _existing_units(collection: Collection, corpus: str) -> dict[str, str]:
    existing: dict[str, str] = {}
    got = collection.get(where={"corpus": corpus}, include=["metadatas"])
    for metadata in got["metadatas"] or []:
        source, unit_hash = str(metadata["source"]), str(metadata.get("unit_hash", ""))
        # two hashes: a write was interrupted between adding the new chunks and deleting the old
        existing[source] = unit_hash if existing.get(source, unit_hash) == unit_hash else ""
    return existing


def _chunk_metadata(chunk: Chunk, unit: Unit, corpus: str) -> dict[str, Any]:
    return {
        "source": chunk.source or unit.source,
        "symbol": chunk.symbol,
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "kind": chunk.kind,
        "unit_hash": unit.content_hash,
        "corpus": corpus,
    }


def sync_units(
    units: list[Unit],
    *,
    corpus: str,
    in_scope: Callable[[str], bool],
    index_path: str | Path | None = None,
    embeddings: Embeddings | None = None,
    progress: bool = True,
    collection_name: str = COLLECTION_NAME,
) -> IndexStats:
    """Make the index hold exactly ``units`` for the sources of ``corpus`` that ``in_scope`` accepts."""
    from ragcoder.chains.retrieval.embeddings import load_embeddings

    started = time.perf_counter()
    path = resolve_index_path(index_path)
    embeddings = embeddings or load_embeddings()
    collection = open_collection(path, embeddings, create=True, collection_name=collection_name)
    assert collection is not None
    stats = IndexStats(str(path), units_seen=len(units))
    existing = _existing_units(collection, corpus)
    changed = [u for u in units if existing.get(u.source) != u.content_hash]
    stats.units_unchanged = len(units) - len(changed)
    pending = _split_units(changed, stats)  # every unit is split before anything is written
    failed = {u.source for u in changed} - {unit.source for unit, _ in pending}
    current = {u.source for u in units} - failed  # a unit that failed loses its old chunks too
    empty_new = [unit for unit, chunks in pending if not chunks and unit.source not in existing]
    pending = [(unit, chunks) for unit, chunks in pending if chunks or unit.source in existing]
    stats.units_unchanged += len(empty_new)  # nothing to store, now or before
    total_chunks = sum(len(chunks) for _, chunks in pending)
    try:
        for source in sorted(s for s in existing if in_scope(s) and s not in current):
            stats.chunks_removed += len(collection.get(where={"source": source}, include=[])["ids"])
            collection.delete(where={"source": source})
            stats.units_removed += 1
        with _ProgressBar(
            progress, total_chunks, f"Embedding {len(changed)} changed of {len(units)}"
        ) as advance:
            batch: list[tuple[Unit, list[Chunk]]] = []
            for unit, chunks in pending:
                batch.append((unit, chunks))
                if sum(len(c) for _, c in batch) >= EMBED_BATCH_CHUNKS:
                    _write_batch(collection, batch, embeddings, corpus, stats, existing, advance)
                    batch = []
            if batch:
                _write_batch(collection, batch, embeddings, corpus, stats, existing, advance)
    finally:  # whatever was written, even before an interruption, must reach the retriever's BM25
        if stats.units_removed or pending:
            _bump_generation(path)
    stats.seconds = time.perf_counter() - started
    return stats


def _split_units(units: list[Unit], stats: IndexStats) -> list[tuple[Unit, list[Chunk]]]:
    """Each unit with its chunks; one that cannot be split is skipped with a warning, not fatal."""
    pending = []
    for unit in units:
        try:
            pending.append((unit, unit.load_chunks()))
        except Exception as exc:  # MemoryError and RecursionError included: deeply nested input
            stats.skipped.append(
                _skip_note(unit.source, f"cannot split it ({type(exc).__name__}: {exc})"[:300])
            )
    return pending


def _write_batch(
    collection: Collection,
    batch: list[tuple[Unit, list[Chunk]]],
    embeddings: Embeddings,
    corpus: str,
    stats: IndexStats,
    existing: dict[str, str],
    advance: Callable[[int], None],
) -> None:
    chunks = [c for _, unit_chunks in batch for c in unit_chunks]
    vectors = embeddings.embed_documents([c.text_for_embedding() for c in chunks]) if chunks else []
    ids, documents, metadatas = [], [], []
    for unit, unit_chunks in batch:
        for number, chunk in enumerate(unit_chunks):
            ids.append(f"{_hash(unit.source)[:16]}-{unit.content_hash[:12]}-{number}")
            documents.append(chunk.text)
            metadatas.append(_chunk_metadata(chunk, unit, corpus))
    # replace: the new chunks go in before the old ones go, so an interrupted write leaves each
    # unit searchable (and marked for a redo by its two hashes)
    old_ids = [
        old
        for unit, _ in batch
        if unit.source in existing
        for old in collection.get(where={"source": unit.source}, include=[])["ids"]
    ]
    step = collection._client.get_max_batch_size() if hasattr(collection, "_client") else 5000
    for start in range(0, len(ids), step):
        end = start + step
        collection.upsert(
            ids=ids[start:end],
            documents=documents[start:end],
            metadatas=metadatas[start:end],
            embeddings=vectors[start:end],
        )
    new_ids = set(ids)
    stale = [old for old in old_ids if old not in new_ids]
    for start in range(0, len(stale), step):
        collection.delete(ids=stale[start : start + step])
    stats.chunks_removed += len(stale)
    stats.units_indexed += len(batch)
    stats.chunks_added += len(ids)
    advance(len(ids))


class _ProgressBar:
    """A rich progress bar over chunks embedded, or nothing when ``enabled`` is false."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.enabled, self.total, self.description = enabled and total > 0, total, description
        self._progress: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks"),
            TimeRemainingColumn(),
        )
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# -- public entry points --------------------------------------------------------------------------


def index_paths(
    paths: Iterable[str | Path],
    *,
    index_path: str | Path | None = None,
    embeddings: Embeddings | None = None,
    progress: bool = True,
    collection_name: str = COLLECTION_NAME,
) -> IndexStats:
    """Index Python, Markdown, reST and text files under ``paths`` (files or folders), incrementally.

    Files whose path mentions HumanEval are never indexed. Files indexed earlier under these roots
    that no longer exist are removed.
    """
    roots = [Path(p).expanduser().resolve() for p in paths]
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise FileNotFoundError(f"Cannot index {', '.join(missing)}: no such file or folder.")
    units: list[Unit] = []
    excluded = 0
    skipped: list[str] = []
    seen: set[Path] = set()
    for file in iter_files(roots):
        if file in seen:  # overlapping roots
            continue
        seen.add(file)
        if is_excluded(file):
            excluded += 1
            continue
        problem, data = file_problem(file)
        if problem:
            skipped.append(_skip_note(file, problem))
            continue
        units.append(_file_unit(file, data))
    prefixes = [str(r) for r in roots]

    def in_scope(source: str) -> bool:
        return any(source == p or source.startswith(p.rstrip("/") + "/") for p in prefixes)

    stats = sync_units(
        units,
        corpus="files",
        in_scope=in_scope,
        index_path=index_path,
        embeddings=embeddings,
        progress=progress,
        collection_name=collection_name,
    )
    stats.units_excluded = excluded
    stats.skipped[:0] = skipped
    return stats


def index_stdlib(
    *,
    index_path: str | Path | None = None,
    embeddings: Embeddings | None = None,
    progress: bool = True,
    modules: tuple[str, ...] | None = None,
    include_rest: bool = False,
    collection_name: str = COLLECTION_NAME,
) -> IndexStats:
    """Index the pydoc documentation of the common stdlib modules (``STDLIB_MODULES``); with
    ``include_rest``, also Debian's reST pages for them when ``python3.11-doc`` is installed (off by
    default: on the tuning half of bench/data/retrieval_questions.jsonl it lowered vector recall@5
    from 0.91 to 0.78 and tripled indexing time). Re-running only re-embeds what changed."""
    from ragcoder.chains.retrieval.stdlib_corpus import STDLIB_MODULES, iter_stdlib_docs, python_version_tag

    units = []
    symbols: dict[str, str] = {}  # API symbol -> the module documenting it, for the popularity prior
    for docs in iter_stdlib_docs(modules or STDLIB_MODULES, include_rest=include_rest):
        for chunk in docs.chunks:  # pydoc comes first and names the module (a reST chunk names a page)
            if chunk.kind == "api-doc" and chunk.symbol:
                symbols.setdefault(chunk.symbol, chunk.source)
        content = "\0".join(f"{c.symbol}\0{c.kind}\0{c.text}\0{c.text_for_embedding()}" for c in docs.chunks)
        chunks = docs.chunks
        units.append(Unit(docs.module, _hash(python_version_tag(), content), lambda chunks=chunks: chunks))
    stats = sync_units(
        units,
        corpus="stdlib",
        in_scope=lambda source: True,
        index_path=index_path,
        embeddings=embeddings,
        progress=progress,
        collection_name=collection_name,
    )
    from ragcoder.chains.retrieval.api_usage import ensure_usage

    ensure_usage(resolve_index_path(index_path), symbols)  # the retriever's popularity prior
    return stats
