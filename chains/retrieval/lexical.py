"""Lexical search for the retriever: a code-aware tokenizer and Okapi BM25 with precomputed
per-posting weights (a query costs a few numpy additions, fast at 20k+ chunks)."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

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
