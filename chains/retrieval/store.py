"""The retriever's in-memory copy of an index: every chunk's text and metadata, BM25 over them, the
chunk vectors, and a lookup of API symbols. Built on the first query and kept until the indexer
writes again (the index's generation), so a hybrid query reads nothing from SQLite.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcoder.chains.retrieval.indexing import index_generation
from ragcoder.chains.retrieval.lexical import BM25Index

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection


@dataclass
class ChunkStore:
    """Every chunk of one index in memory: texts, metadata, BM25, vectors (loaded on first hybrid
    use) and the API symbol lookup that the model's guesses go through."""

    generation: str
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    bm25: BM25Index
    vectors: Any = None
    """The chunk vectors (np.ndarray, rows in ``ids`` order), loaded on first hybrid use."""
    positions: dict[str, int] = field(default_factory=dict)
    """Row of each chunk id: hybrid search takes texts and metadata from here, not from SQLite."""
    symbol_rows: dict[str, list[int]] = field(default_factory=dict)
    """Rows of each API symbol, lower-cased, under the full symbol and each dotted tail of two or
    more parts (``pathlib.path.glob`` under ``path.glob`` too): guessed names are looked up here."""

    def __post_init__(self) -> None:
        self.positions = {id_: row for row, id_ in enumerate(self.ids)}
        for row, metadata in enumerate(self.metadatas):
            symbol = str(metadata.get("symbol") or "").lower()
            if not symbol or metadata.get("kind") != "api-doc":
                continue
            parts = symbol.split(".")
            for start in range(max(len(parts) - 1, 1)):
                self.symbol_rows.setdefault(".".join(parts[start:]), []).append(row)

    def kept(self, row: int, exclude_corpus: str | None) -> bool:
        """Whether chunk ``row`` stays when ``exclude_corpus`` (e.g. "stdlib") is left out."""
        return not exclude_corpus or self.metadatas[row].get("corpus") != exclude_corpus

    def search(self, query: str, pool: int, exclude_corpus: str | None = None) -> list[tuple[int, float]]:
        """BM25's best ``pool`` (row, score); leaving out a corpus scores every chunk (cheap)."""
        if not exclude_corpus:
            return self.bm25.search(query, pool)
        hits = self.bm25.search(query, len(self.ids))
        return [(row, score) for row, score in hits if self.kept(row, exclude_corpus)][:pool]

    def rows_named(self, names: list[str], exclude_corpus: str | None = None) -> list[tuple[int, int]]:
        """(guess rank, row) of the chunks whose symbol, or a dotted tail of it, is one of ``names``
        (best guess first). Ranks count only the names found (a made-up first guess does not demote
        the second), and a row is listed once, under its best guess; rows of ``exclude_corpus`` are
        then left out."""
        found: list[tuple[int, int]] = []
        seen: set[int] = set()
        rank = 0
        for name in names:
            name = name.lower().removeprefix("builtins.")  # builtins are indexed bare: ``sorted``
            rows = [row for row in self.symbol_rows.get(name, []) if row not in seen]
            if rows:
                seen.update(rows)
                found += [(rank, row) for row in rows]
                rank += 1
        return [(rank, row) for rank, row in found if self.kept(row, exclude_corpus)]

    def similarities(self, collection: Collection, query_vector: list[float], ids: list[str]) -> list[float]:
        """Cosine of the (L2-normalised) query to chunks found by BM25 only, from vectors kept in memory."""
        import numpy as np

        if self.vectors is None:
            got = collection.get(include=["embeddings"])
            order = {id_: row for row, id_ in enumerate(got["ids"])}
            matrix = np.asarray(got["embeddings"], dtype=np.float32)
            self.vectors = matrix[[order[id_] for id_ in self.ids]] if len(self.ids) else matrix
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self.vectors /= np.where(norms == 0, 1.0, norms)
        query = np.asarray(query_vector, dtype=np.float32)
        query /= float(np.linalg.norm(query)) or 1.0
        rows = [self.positions[id_] for id_ in ids]
        return [float(v) for v in self.vectors[rows] @ query]


_stores_lock = threading.Lock()
_stores: dict[tuple[str, str], ChunkStore] = {}


def chunk_store(
    collection: Collection, index_path: Path, collection_name: str, generation: str | None = None
) -> ChunkStore:
    """BM25 over every chunk (symbol counted twice, it names the API), cached until the index changes."""
    key = (str(index_path), collection_name)
    generation = index_generation(index_path) if generation is None else generation
    with _stores_lock:
        cached = _stores.get(key)
        if cached is None or cached.generation != generation:
            got = collection.get(include=["documents", "metadatas"])
            metadatas = [dict(m or {}) for m in got["metadatas"] or []]
            texts = list(got["documents"] or [])
            searchable = [
                f"{m.get('symbol', '')} {m.get('symbol', '')} {t}"
                for m, t in zip(metadatas, texts, strict=True)
            ]
            cached = ChunkStore(generation, list(got["ids"]), texts, metadatas, BM25Index(searchable))
            _stores[key] = cached
        return cached
