"""The retriever over the persistent Chroma index: vector, BM25 or hybrid (score fusion, then
exact-name boosts and one chunk per API symbol), with an MMR option, ``k`` and a score threshold.
An empty or missing index returns no documents.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field
from ragcoder.chains.retrieval.fusion import (
    Candidate,
    collapse_duplicates,
    convex_fusion,
    guess_boost,
    name_match_boost,
    reciprocal_rank_fusion,
    usage_boost,
)
from ragcoder.chains.retrieval.indexing import (
    COLLECTION_NAME,
    check_embedder,
    index_generation,
    open_collection,
    resolve_index_path,
)
from ragcoder.chains.retrieval.lexical import BM25Index, tokenize
from ragcoder.chains.retrieval.store import ChunkStore, chunk_store

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

RetrievalMode = Literal["hybrid", "vector", "bm25"]
FusionMethod = Literal["convex", "rrf"]
_Candidate = Candidate  # the name used before the fusion code moved to ragcoder.chains.retrieval.fusion
__all__ = ["BM25Index", "CodeDocRetriever", "open_retriever", "reciprocal_rank_fusion", "tokenize"]


_collections_lock = threading.Lock()
_collections: dict[tuple[str, str], tuple[str, Collection | None, int]] = {}


def _open_collection_cached(
    index_path: Path, collection_name: str, generation: str | None = None
) -> tuple[Collection | None, int]:
    """The collection and its size, re-read only when the indexer has written since (its generation)."""
    key = (str(index_path), collection_name)
    generation = index_generation(index_path) if generation is None else generation
    with _collections_lock:
        cached = _collections.get(key)
        if cached is None or cached[0] != generation:
            collection = open_collection(index_path, None, create=False, collection_name=collection_name)
            cached = (generation, collection, collection.count() if collection is not None else 0)
            if collection is not None:  # a missing index is not remembered: it may appear any time
                _collections[key] = cached
        return cached[1], cached[2]


def _vector_search(
    collection: Collection,
    query_vector: list[float],
    pool: int,
    store: ChunkStore | None,
    exclude_corpus: str | None = None,
) -> list[Candidate]:
    """The ``pool`` nearest chunks. With the in-memory chunk store (hybrid mode) Chroma returns only
    ids and distances: fetching texts and metadata from Chroma's SQLite was most of a search's
    time (docs/benchmarks.md, "Retrieval")."""
    wanted = ["distances"] if store is not None else ["documents", "metadatas", "distances"]
    where = {"corpus": {"$ne": exclude_corpus}} if exclude_corpus else None
    result = collection.query(query_embeddings=[query_vector], n_results=pool, include=wanted, where=where)  # type: ignore[list-item, arg-type]
    ids, distances = result["ids"][0], result["distances"][0]  # type: ignore[index]
    if store is not None and all(id_ in store.positions for id_ in ids):
        rows = [store.positions[id_] for id_ in ids]
        texts, metadatas = [store.texts[r] for r in rows], [store.metadatas[r] for r in rows]
    elif store is not None:  # written since the store was read: ask Chroma for the rest
        return _vector_search(collection, query_vector, pool, None, exclude_corpus)
    else:
        texts, metadatas = result["documents"][0], result["metadatas"][0]  # type: ignore[index]
    return [
        Candidate(id_, text, dict(metadata or {}), 1.0 - distance, 1.0 - distance)
        for id_, text, metadata, distance in zip(ids, texts, metadatas, distances, strict=True)
    ]


_usage_lock = threading.Lock()
_usage_cache: dict[str, tuple[float, dict[str, float]]] = {}


def _usage_prior(index_path: Path) -> dict[str, float]:
    """The popularity prior of the index's API symbols, re-read when its file changes."""
    from ragcoder.chains.retrieval.api_usage import USAGE_FILE, read_usage, usage_prior

    file = index_path / USAGE_FILE
    try:
        stamp = file.stat().st_mtime
    except OSError:
        return {}
    with _usage_lock:
        cached = _usage_cache.get(str(file))
        if cached is None or cached[0] != stamp:
            cached = (stamp, usage_prior(read_usage(index_path)))
            _usage_cache[str(file)] = cached
        return cached[1]


# -- the retriever --------------------------------------------------------------------------------


class CodeDocRetriever(BaseRetriever):
    """Chunks of indexed code and docs for a query, from the persistent Chroma index.

    ``mode="hybrid"`` fuses the BM25 and vector scores (``fusion``), boosts chunks whose symbol the
    query names like code, and keeps one chunk per API symbol (every mode does that);
    ``score_threshold`` drops chunks whose cosine similarity to the query is lower (in ``bm25``
    mode: whose BM25 score is lower). Each document's metadata holds ``source``, ``symbol``,
    ``start_line``/``end_line``, ``kind`` and the ranking ``score``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index_path: str | None = None
    """The Chroma folder (default: ``ragcoder.chains.paths.index_dir()``)."""
    k: int = 4
    """How many documents to return."""
    mode: RetrievalMode = "hybrid"
    """``hybrid`` (BM25 + vector), ``vector`` or ``bm25``."""
    mmr: bool = False
    """Re-rank the candidates with maximal marginal relevance (diverse results)."""
    mmr_lambda: float = 0.5
    """MMR trade-off: 1 = relevance only, 0 = diversity only."""
    score_threshold: float | None = None
    """Minimum cosine similarity (BM25 score in ``bm25`` mode); None keeps everything."""
    fetch_k: int = 30
    """Candidates taken from each ranking before fusion, MMR and the threshold."""
    fusion: FusionMethod = "convex"
    """How ``hybrid`` combines the rankings: ``convex`` (normalised scores, weighted) or ``rrf``."""
    lexical_weight: float = 0.2
    """``convex``: the BM25 share of the fused score (the normalised cosine has the rest); tuned on the
    tuning half of bench/data/retrieval_questions.jsonl."""
    rrf_k: int = 20
    """``rrf``: score = sum of weight / (rrf_k + rank); small values favour each list's top."""
    bm25_weight: float = 0.5
    """``rrf``: weight of the BM25 ranking (the vector ranking weighs 1)."""
    name_boost: float = 0.5
    """Added (hybrid) to chunks whose symbol the query names like code (``json.loads``, ``groupby()``)."""
    usage_weight: float = 0.2
    """Added (hybrid), times the API's popularity in [0, 1] (``api-usage.json`` beside the index,
    see ragcoder.chains.retrieval.api_usage), to API chunks; tuned on the tuning half of the retrieval questions."""
    duplicate_weight: float = 0.1
    """Every mode keeps one chunk per API symbol; in hybrid its score also gains this share of the
    second chunk's score (pydoc and reST agreeing)."""
    api_guesser: Runnable | None = Field(default=None, exclude=True)
    """Names the APIs a query needs (``ragcoder.chains.retrieval.api_guess.api_guess_chain`` over a chat model): in
    hybrid, the indexed chunks of those symbols join the candidates and move up. One model call
    per query, none when the query leaves the stdlib out; None (the default) makes none."""
    guess_weight: float = 1.0
    """Added (hybrid) to the chunks of the model's first guess found in the index: a named API
    outranks an unnamed one. Tuned on the tuning half (docs/benchmarks.md, "Retrieval",
    ``bench/retrieval_bench.py --guess``)."""
    guess_decay: float = 0.6
    """Each later guess adds this share of the one before it."""
    collection_name: str = COLLECTION_NAME
    embeddings: Embeddings | None = Field(default=None, exclude=True)
    """The embedder the index was built with (default: ``load_embeddings()``, loaded on first use)."""

    def _embedder(self) -> Embeddings:
        if self.embeddings is None:
            from ragcoder.chains.retrieval.embeddings import load_embeddings

            self.embeddings = load_embeddings()
        return self.embeddings

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        exclude_corpus: str | None = None,
    ) -> list[Document]:
        """``k`` overrides the retriever's; ``exclude_corpus="stdlib"`` leaves the standard library's
        docs out (the agent's gate asks for that: the user's own code and docs only)."""
        wanted = self.k if k is None else k
        path = resolve_index_path(self.index_path)
        generation = index_generation(path)  # read once per query: it names the cached state to use
        collection, count = _open_collection_cached(path, self.collection_name, generation)
        if wanted <= 0 or collection is None or count == 0:
            return []
        pool = max(self.fetch_k, wanted * (4 if self.mmr else 1))
        needs_vector = self.mode != "bm25" or self.mmr  # MMR compares chunk vectors in every mode
        if needs_vector or self.embeddings is not None:
            check_embedder(collection, self._embedder(), path)
        query_vector = self._embedder().embed_query(query) if needs_vector else None
        lexical = (
            chunk_store(collection, path, self.collection_name, generation) if self.mode != "vector" else None
        )
        guesses: list[str] = []
        if self.api_guesser is not None and self.mode == "hybrid" and exclude_corpus != "stdlib":
            guesses = self.api_guesser.invoke(query, config={"callbacks": run_manager.get_child()})
        candidates = self._rank(
            query,
            query_vector if self.mode != "bm25" else None,
            collection,
            lexical,
            pool,
            path,
            guesses,
            exclude_corpus,
        )
        if self.score_threshold is not None or self.mmr:
            candidates = self._filter_and_diversify(candidates, query_vector, collection, wanted)
        return [
            Document(page_content=c.text, metadata={**c.metadata, "score": round(c.score, 6), "id": c.id})
            for c in candidates[:wanted]
        ]

    def _rank(
        self,
        query: str,
        query_vector: list[float] | None,
        collection: Collection,
        lexical: ChunkStore | None,
        pool: int,
        path: Path,
        guesses: list[str] | None = None,
        exclude_corpus: str | None = None,
    ) -> list[Candidate]:
        vector_hits: list[Candidate] = []
        lexical_hits: list[Candidate] = []
        if query_vector is not None:
            vector_hits = _vector_search(collection, query_vector, pool, lexical, exclude_corpus)
        if lexical is not None:
            for index, score in lexical.search(query, pool, exclude_corpus):
                lexical_hits.append(
                    Candidate(
                        lexical.ids[index],
                        lexical.texts[index],
                        lexical.metadatas[index],
                        score,
                        lexical=score,
                    )
                )
        if self.mode == "vector":
            return collapse_duplicates(vector_hits, 0.0)
        if self.mode == "bm25":
            return collapse_duplicates(lexical_hits, 0.0)
        assert lexical is not None
        guess_ranks: dict[str, int] = {}
        guessed: list[Candidate] = []  # the named chunks neither ranking found, BM25 score 0
        found = {c.id for c in vector_hits} | {c.id for c in lexical_hits}
        for rank, row in lexical.rows_named(guesses or [], exclude_corpus):
            id_ = lexical.ids[row]
            guess_ranks[id_] = rank
            if id_ not in found:
                guessed.append(Candidate(id_, lexical.texts[row], lexical.metadatas[row], 0.0, lexical=0.0))
        if self.fusion == "rrf":
            fused = reciprocal_rank_fusion(
                [vector_hits, lexical_hits, guessed], self.rrf_k, [1.0, self.bm25_weight, 0.0]
            )
        else:
            assert query_vector is not None and lexical is not None
            fused = convex_fusion(
                vector_hits,
                lexical_hits + guessed,
                self.lexical_weight,
                lambda ids: lexical.similarities(collection, query_vector, ids),
            )
        fused = name_match_boost(query, fused, self.name_boost)
        fused = usage_boost(fused, _usage_prior(path), self.usage_weight)
        fused = guess_boost(fused, guess_ranks, self.guess_weight, self.guess_decay)
        return collapse_duplicates(fused, self.duplicate_weight)

    def _filter_and_diversify(
        self,
        candidates: list[Candidate],
        query_vector: list[float] | None,
        collection: Collection,
        wanted: int,
    ) -> list[Candidate]:
        import numpy as np

        if self.mode == "bm25" and self.score_threshold is not None:  # on the BM25 score
            candidates = [c for c in candidates if c.score >= self.score_threshold]
        if query_vector is None or not candidates:
            return candidates
        got = collection.get(ids=[c.id for c in candidates], include=["embeddings"])
        vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
        query = np.asarray(query_vector, dtype=np.float32)
        for candidate in candidates:
            vector = np.asarray(vectors[candidate.id], dtype=np.float32)
            norm = float(np.linalg.norm(vector) * np.linalg.norm(query)) or 1.0
            candidate.similarity = float(vector @ query) / norm
        if self.score_threshold is not None and self.mode != "bm25":
            candidates = [c for c in candidates if (c.similarity or 0.0) >= self.score_threshold]
        if self.mmr and candidates:
            from langchain_core.vectorstores.utils import maximal_marginal_relevance

            matrix = np.asarray([vectors[c.id] for c in candidates], dtype=np.float32)
            order = maximal_marginal_relevance(query, matrix, lambda_mult=self.mmr_lambda, k=wanted)
            candidates = [candidates[i] for i in order]
        return candidates


def open_retriever(
    index_path: str | Path | None = None,
    *,
    k: int = 4,
    mode: RetrievalMode = "hybrid",
    mmr: bool = False,
    score_threshold: float | None = None,
    embeddings: Embeddings | None = None,
) -> CodeDocRetriever:
    """A retriever over the index at ``index_path`` (default: the user's index). Opening is cheap:
    the embedder loads and BM25 is built on the first query."""
    return CodeDocRetriever(
        index_path=str(index_path) if index_path is not None else None,
        k=k,
        mode=mode,
        mmr=mmr,
        score_threshold=score_threshold,
        embeddings=embeddings,
    )
