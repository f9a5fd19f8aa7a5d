"""Retrieval: embeddings, the Chroma index, the hybrid retriever and the gate that decides when to use it.

    from ragcoder.chains.retrieval import open_retriever, decide_retrieval

Names are imported lazily: loading this package does not import chromadb or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodeDocRetriever": "ragcoder.chains.retrieval.retriever",
    "open_retriever": "ragcoder.chains.retrieval.retriever",
    "decide_retrieval": "ragcoder.chains.retrieval.gate",
    "RetrievalDecision": "ragcoder.chains.retrieval.gate",
    "load_embeddings": "ragcoder.chains.retrieval.embeddings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
