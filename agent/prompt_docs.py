"""The docs a request's prompt shows: from the retriever, as the retrieval gate decides."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from ragcoder.chains.retrieval.gate import RetrievalDecision


def _filters_corpus(retriever: BaseRetriever) -> bool:
    """Whether the retriever takes ``exclude_corpus`` (ragcoder's does; a vector store's retriever
    hands unknown keywords on to its store's search, which rejects them)."""
    search = getattr(retriever, "_get_relevant_documents", None)
    return search is not None and "exclude_corpus" in inspect.signature(search).parameters


def docs_for_prompt(
    retriever: BaseRetriever | None,
    gate: Callable[[str], RetrievalDecision] | None,
    instruction: str,
) -> tuple[list[Document], str]:
    """The docs for the prompt, and what was done to get them (for the trace)."""
    if retriever is None:
        return [], "off"
    if gate is not None:
        decision = gate(instruction)
        if not decision.retrieve:
            return [], f"skipped: {decision.reason}"
        if decision.stdlib:
            docs = list(retriever.invoke(instruction))
        else:  # our retriever leaves the corpus out of its search; others are filtered after
            leave_out = {"exclude_corpus": "stdlib"} if _filters_corpus(retriever) else {}
            found = retriever.invoke(instruction, **leave_out)
            docs = [d for d in found if d.metadata.get("corpus") != "stdlib"]
        return docs, f"{len(docs)} doc(s): {decision.reason}"
    docs = list(retriever.invoke(instruction))
    return docs, f"{len(docs)} doc(s)"
