"""The retriever over the persistent Chroma index: vector, BM25 or hybrid (reciprocal rank fusion),
with an MMR option, ``k`` and a score threshold. An empty or missing index returns no documents.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from chains.indexing import (
    COLLECTION_NAME,
    check_embedder,
    index_generation,
    open_collection,
    resolve_index_path,
)

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

RetrievalMode = Literal["hybrid", "vector", "bm25"]

# -- BM25 -----------------------------------------------------------------------------------------

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "get",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "to",
        "use",
        "using",
        "was",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "want",
        "need",
        "way",
        "python",
        "should",
        "would",
        "could",
        "some",
        "any",
        "all",
        "also",
        "just",
        "than",
    ]
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _stem(word: str) -> str:
    """A deliberately light suffix stripper (parse/parses/parsed/parsing -> pars)."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 4 and word.endswith("sses"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Lower-cased, stemmed words without stop words; identifiers also yield their snake/camel parts."""
    tokens: list[str] = []
    for word in _WORD.findall(text):
        lowered = word.lower()
        if lowered not in _STOPWORDS:
            tokens.append(_stem(lowered))
        parts = _PARTS.findall(word)
        if len(parts) > 1:
            tokens.extend(_stem(p.lower()) for p in parts if p.lower() not in _STOPWORDS)
    return tokens


@dataclass
class Posting:
    doc_indexes: Any  # np.ndarray[int32]
    weights: Any  # np.ndarray[float32]: the term's full BM25 contribution in each document


class BM25Index:
    """Okapi BM25 with precomputed per-posting weights: a query is a few vector additions."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        import numpy as np

        self.size = len(texts)
        token_lists = [tokenize(t) for t in texts]
        lengths = np.array([len(t) for t in token_lists], dtype=np.float32)
        average = float(lengths.mean()) if self.size else 1.0
        by_term: dict[str, tuple[list[int], list[int]]] = {}
        for doc_index, tokens in enumerate(token_lists):
            for term, count in Counter(tokens).items():
                docs, counts = by_term.setdefault(term, ([], []))
                docs.append(doc_index)
                counts.append(count)
        self.postings: dict[str, Posting] = {}
        for term, (docs, counts) in by_term.items():
            doc_array = np.array(docs, dtype=np.int32)
            tf = np.array(counts, dtype=np.float32)
            idf = math.log(1.0 + (self.size - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = k1 * (1.0 - b + b * lengths[doc_array] / max(average, 1e-9))
            self.postings[term] = Posting(doc_array, (idf * tf * (k1 + 1.0) / (tf + norm)).astype(np.float32))

    def search(self, query: str, n: int) -> list[tuple[int, float]]:
        """Up to ``n`` (document index, score) pairs with a positive score, best first."""
        import numpy as np

        terms = Counter(t for t in tokenize(query) if t in self.postings)
        if not terms or n <= 0:
            return []
        scores = np.zeros(self.size, dtype=np.float32)
        for term, count in terms.items():
            posting = self.postings[term]
            scores[posting.doc_indexes] += count * posting.weights
        hits = np.flatnonzero(scores)
        if len(hits) > n:
            hits = hits[np.argpartition(-scores[hits], n - 1)[:n]]
        ordered = hits[np.argsort(-scores[hits], kind="stable")]
        return [(int(i), float(scores[i])) for i in ordered]


@dataclass
class _LexicalIndex:
    generation: str
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    bm25: BM25Index


_lexical_lock = threading.Lock()
_lexical_cache: dict[tuple[str, str], _LexicalIndex] = {}


def _lexical_index(collection: Collection, index_path: Path, collection_name: str) -> _LexicalIndex:
    """BM25 over every chunk (symbol counted twice, it names the API), cached until the index changes."""
    key = (str(index_path), collection_name)
    generation = index_generation(index_path)
    with _lexical_lock:
        cached = _lexical_cache.get(key)
        if cached is None or cached.generation != generation:
            got = collection.get(include=["documents", "metadatas"])
            metadatas = [dict(m or {}) for m in got["metadatas"] or []]
            texts = list(got["documents"] or [])
            searchable = [
                f"{m.get('symbol', '')} {m.get('symbol', '')} {t}"
                for m, t in zip(metadatas, texts, strict=True)
            ]
            cached = _LexicalIndex(generation, list(got["ids"]), texts, metadatas, BM25Index(searchable))
            _lexical_cache[key] = cached
        return cached


_collections_lock = threading.Lock()
_collections: dict[tuple[str, str], tuple[str, Collection | None, int]] = {}


def _open_collection_cached(index_path: Path, collection_name: str) -> tuple[Collection | None, int]:
    """The collection and its size, re-read only when the indexer has written since (its generation)."""
    key = (str(index_path), collection_name)
    generation = index_generation(index_path)
    with _collections_lock:
        cached = _collections.get(key)
        if cached is None or cached[0] != generation:
            collection = open_collection(index_path, None, create=False, collection_name=collection_name)
            cached = (generation, collection, collection.count() if collection is not None else 0)
            if collection is not None:  # a missing index is not remembered: it may appear any time
                _collections[key] = cached
        return cached[1], cached[2]


# -- the retriever --------------------------------------------------------------------------------


@dataclass
class _Candidate:
    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    similarity: float | None = None


class CodeDocRetriever(BaseRetriever):
    """Chunks of indexed code and docs for a query, from the persistent Chroma index.

    ``mode="hybrid"`` fuses the BM25 and vector rankings with reciprocal rank fusion;
    ``score_threshold`` drops chunks whose cosine similarity to the query is lower (in ``bm25``
    mode: whose BM25 score is lower). Each document's metadata holds ``source``, ``symbol``,
    ``start_line``/``end_line``, ``kind`` and the ranking ``score``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index_path: str | None = None
    """The Chroma folder (default: ``chains.paths.index_dir()``)."""
    k: int = 4
    """How many documents to return."""
    mode: RetrievalMode = "hybrid"
    """``hybrid`` (BM25 + vector, RRF), ``vector`` or ``bm25``."""
    mmr: bool = False
    """Re-rank the candidates with maximal marginal relevance (diverse results)."""
    mmr_lambda: float = 0.5
    """MMR trade-off: 1 = relevance only, 0 = diversity only."""
    score_threshold: float | None = None
    """Minimum cosine similarity (BM25 score in ``bm25`` mode); None keeps everything."""
    fetch_k: int = 30
    """Candidates taken from each ranking before fusion, MMR and the threshold."""
    rrf_k: int = 20
    """The RRF constant: score = sum of weight / (rrf_k + rank); small values favour each list's top."""
    bm25_weight: float = 0.5
    """Weight of the BM25 ranking in the fusion (the vector ranking weighs 1): on natural-language
    questions the vector ranking is the stronger one (bench/retrieval_bench.py), BM25 adds exact names."""
    collection_name: str = COLLECTION_NAME
    embeddings: Embeddings | None = Field(default=None, exclude=True)
    """The embedder the index was built with (default: ``load_embeddings()``, loaded on first use)."""

    def _embedder(self) -> Embeddings:
        if self.embeddings is None:
            from chains.embeddings import load_embeddings

            self.embeddings = load_embeddings()
        return self.embeddings

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        wanted = self.k if k is None else k
        path = resolve_index_path(self.index_path)
        collection, count = _open_collection_cached(path, self.collection_name)
        if wanted <= 0 or collection is None or count == 0:
            return []
        pool = max(self.fetch_k, wanted * (4 if self.mmr else 1))
        needs_vector = self.mode != "bm25" or self.mmr  # MMR compares chunk vectors in every mode
        if needs_vector or self.embeddings is not None:
            check_embedder(collection, self._embedder(), path)
        query_vector = self._embedder().embed_query(query) if needs_vector else None
        candidates = self._rank(query, query_vector if self.mode != "bm25" else None, collection, path, pool)
        if self.score_threshold is not None or self.mmr:
            candidates = self._filter_and_diversify(candidates, query_vector, collection, wanted)
        return [
            Document(page_content=c.text, metadata={**c.metadata, "score": round(c.score, 6), "id": c.id})
            for c in candidates[:wanted]
        ]

    def _rank(
        self, query: str, query_vector: list[float] | None, collection: Collection, path: Path, pool: int
    ) -> list[_Candidate]:
        vector_hits: list[_Candidate] = []
        lexical_hits: list[_Candidate] = []
        if query_vector is not None:
            result = collection.query(
                query_embeddings=[query_vector],
                n_results=pool,
                include=["documents", "metadatas", "distances"],
            )
            for id_, text, metadata, distance in zip(
                result["ids"][0],
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            ):
                vector_hits.append(_Candidate(id_, text, dict(metadata), 1.0 - distance, 1.0 - distance))
        if self.mode != "vector":
            lexical = _lexical_index(collection, path, self.collection_name)
            for index, score in lexical.bm25.search(query, pool):
                lexical_hits.append(
                    _Candidate(lexical.ids[index], lexical.texts[index], lexical.metadatas[index], score)
                )
        if self.mode == "vector":
            return vector_hits
        if self.mode == "bm25":
            return lexical_hits
        return reciprocal_rank_fusion([vector_hits, lexical_hits], self.rrf_k, [1.0, self.bm25_weight])

    def _filter_and_diversify(
        self,
        candidates: list[_Candidate],
        query_vector: list[float] | None,
        collection: Collection,
        wanted: int,
    ) -> list[_Candidate]:
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


def reciprocal_rank_fusion(
    rankings: list[list[_Candidate]], rrf_k: int = 60, weights: list[float] | None = None
) -> list[_Candidate]:
    """Merge rankings: list i adds weights[i] / (rrf_k + rank) to its items (rank from 1); best first."""
    fused: dict[str, _Candidate] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, candidate in enumerate(ranking, 1):
            entry = fused.setdefault(
                candidate.id,
                _Candidate(candidate.id, candidate.text, candidate.metadata, 0.0, candidate.similarity),
            )
            entry.score += weight / (rrf_k + rank)
            if entry.similarity is None:
                entry.similarity = candidate.similarity
    return sorted(fused.values(), key=lambda c: -c.score)


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
