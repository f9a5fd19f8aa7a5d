"""Combining the vector and BM25 rankings, then re-ranking the fused list.

- ``convex_fusion`` (the hybrid default): a weighted sum of the cosine similarity, min-max
  normalised over the vector pool, and the BM25 score divided by the query's best BM25 score. A
  BM25 ranking whose top score is weak still adds little, unlike in rank fusion where its first
  hit always counts as much as the vector ranking's first hit.
- ``reciprocal_rank_fusion``: the classic score-free alternative (``fusion="rrf"``).
- ``name_match_boost``: a chunk whose symbol is named in the query (``json.loads``, ``groupby()``,
  ``ChainMap``) moves up.
- ``usage_boost``: an API that real code uses more moves up (a popularity prior, ragcoder.chains.retrieval.api_usage).
- ``guess_boost``: an API the code model named for the query moves up (ragcoder.chains.retrieval.api_guess).
- ``collapse_duplicates``: one chunk per API symbol (pydoc and reST both document ``json.loads``),
  so the top k holds k different answers; a second chunk of the same symbol adds a little.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any


@dataclass
class Candidate:
    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    """The ranking score: cosine (vector), BM25 (bm25) or the fused score (hybrid)."""
    similarity: float | None = None
    """Cosine similarity to the query, when known."""
    lexical: float | None = None
    """BM25 score, when the chunk was in the BM25 ranking."""


def reciprocal_rank_fusion(
    rankings: list[list[Candidate]], rrf_k: int = 60, weights: list[float] | None = None
) -> list[Candidate]:
    """Merge rankings: list i adds weights[i] / (rrf_k + rank) to its items (rank from 1); best first."""
    fused: dict[str, Candidate] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, candidate in enumerate(ranking, 1):
            entry = fused.setdefault(
                candidate.id,
                Candidate(candidate.id, candidate.text, candidate.metadata, 0.0, candidate.similarity),
            )
            entry.score += weight / (rrf_k + rank)
            if entry.similarity is None:
                entry.similarity = candidate.similarity
            if candidate.lexical is not None:
                entry.lexical = candidate.lexical
    return sorted(fused.values(), key=lambda c: -c.score)


def convex_fusion(
    vector_hits: list[Candidate],
    lexical_hits: list[Candidate],
    lexical_weight: float,
    similarity_of: Callable[[list[str]], list[float]],
) -> list[Candidate]:
    """score = (1 - w) * (cos - lo) / (hi - lo) + w * bm25 / top_bm25, over both pools.

    ``lo``/``hi`` are the lowest and highest cosine in the vector pool; chunks found only by BM25
    get their cosine from ``similarity_of`` (ids -> cosines) and may score below 0 on that part.
    """
    merged: dict[str, Candidate] = {}
    for hit in vector_hits:
        merged[hit.id] = Candidate(hit.id, hit.text, hit.metadata, 0.0, hit.similarity)
    for hit in lexical_hits:
        entry = merged.setdefault(hit.id, Candidate(hit.id, hit.text, hit.metadata, 0.0))
        entry.lexical = hit.lexical if hit.lexical is not None else hit.score
    missing = [c for c in merged.values() if c.similarity is None]
    if missing:
        for candidate, similarity in zip(missing, similarity_of([c.id for c in missing]), strict=True):
            candidate.similarity = similarity
    similarities = [c.similarity or 0.0 for c in (vector_hits or list(merged.values()))]
    lo, hi = (min(similarities), max(similarities)) if similarities else (0.0, 1.0)
    span = hi - lo if hi - lo > 1e-9 else 1.0
    top_lexical = max((c.lexical or 0.0 for c in merged.values()), default=0.0)
    for candidate in merged.values():
        vector_part = ((candidate.similarity or 0.0) - lo) / span
        lexical_part = (candidate.lexical or 0.0) / top_lexical if top_lexical > 0 else 0.0
        candidate.score = (1.0 - lexical_weight) * vector_part + lexical_weight * lexical_part
    return sorted(merged.values(), key=lambda c: -c.score)


_CODE_NAME = re.compile(r"`?([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)(\(\))?`?")


def code_names(query: str) -> set[str]:
    """Names in the query written like code: dotted (``os.path.join``), snake_case, CamelCase with an
    inner capital, followed by ``()`` or in backticks. Plain words ("sleep", "choice") are not."""
    names: set[str] = set()
    for match in _CODE_NAME.finditer(query):
        name, call = match.group(1), match.group(2)
        quoted = match.group(0).startswith("`") and match.group(0).endswith("`")
        inner_capital = re.search(r"[a-z][A-Z]", name) is not None
        if call or quoted or "." in name.strip(".") or "_" in name.strip("_") or inner_capital:
            names.add(name.lower())
    return names


def name_match_boost(query: str, candidates: list[Candidate], weight: float) -> list[Candidate]:
    """Add ``weight`` to chunks whose symbol (or its last part, or a dotted tail of it) is a code
    name in the query; re-sort. No code names: the list is returned as it was."""
    names = code_names(query)
    if not names or weight == 0.0:
        return candidates
    for candidate in candidates:
        symbol = str(candidate.metadata.get("symbol", "")).lower()
        if not symbol:
            continue
        parts = symbol.split(".")
        tails = {".".join(parts[i:]) for i in range(len(parts))}
        if names & tails:
            candidate.score += weight
    return sorted(candidates, key=lambda c: -c.score)


def usage_boost(candidates: list[Candidate], prior: dict[str, float], weight: float) -> list[Candidate]:
    """Add ``weight * prior[symbol]`` to API chunks (``kind == "api-doc"``); re-sort.

    ``prior`` is the popularity of each API in real code, in [0, 1] (ragcoder.chains.retrieval.api_usage): between two
    chunks that match a question about equally, the one code uses more is the likelier answer.
    """
    if not prior or weight == 0.0:
        return candidates
    for candidate in candidates:
        if candidate.metadata.get("kind") == "api-doc":
            candidate.score += weight * prior.get(str(candidate.metadata.get("symbol", "")), 0.0)
    return sorted(candidates, key=lambda c: -c.score)


def guess_boost(
    candidates: list[Candidate], guess_ranks: dict[str, int], weight: float, decay: float
) -> list[Candidate]:
    """Add ``weight * decay ** rank`` to each chunk the model named (``guess_ranks``: chunk id ->
    rank of the guess that named it, 0 = first); re-sort."""
    if not guess_ranks or weight == 0.0:
        return candidates
    for candidate in candidates:
        rank = guess_ranks.get(candidate.id)
        if rank is not None:
            candidate.score += weight * decay**rank
    return sorted(candidates, key=lambda c: -c.score)


def collapse_duplicates(candidates: list[Candidate], second_weight: float) -> list[Candidate]:
    """Keep the best chunk per API symbol (``kind == "api-doc"``); other chunks are kept as they are.

    The kept chunk's score gains ``second_weight`` times the score of the symbol's second-best chunk
    (two documents agreeing is evidence). Order: best first.
    """
    best: dict[str, Candidate] = {}
    second: dict[str, float] = {}
    kept: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: -c.score):
        symbol = candidate.metadata.get("symbol")
        if candidate.metadata.get("kind") != "api-doc" or not symbol:
            kept.append(candidate)
        elif symbol not in best:
            best[symbol] = replace(candidate)  # a copy: the caller's candidates keep their scores
            kept.append(best[symbol])
        elif symbol not in second:
            second[symbol] = candidate.score
    for symbol, score in second.items():
        best[symbol].score += second_weight * max(score, 0.0)
    return sorted(kept, key=lambda c: -c.score)
