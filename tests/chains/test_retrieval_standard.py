"""The langchain-tests standard retriever suite, run against ``CodeDocRetriever``: once over an index
built with the hashing embeddings (fast) and once with the real all-MiniLM-L6-v2 embedder (slow)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_tests.integration_tests import RetrieversIntegrationTests
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.indexing import index_paths
from ragcoder.chains.retrieval.retriever import CodeDocRetriever

# pytest-asyncio runs in strict mode: the suite's one coroutine test needs the asyncio mark, and the
# standard tests may not be overridden, so the mark is module-wide; the sync tests then draw a
# "marked with asyncio but not an async function" warning, which is ignored here and only here.
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings(
        "ignore:The test <Function test_.*is marked with '@pytest.mark.asyncio':pytest.PytestWarning"
    ),
]

SUITE_DOCS = {
    f"doc{i}.md": f"# Topic {i}\n\nNotes about retrieval number {i}: indexes, queries and ranking.\n"
    for i in range(6)
}


def _build_index(embeddings: Embeddings) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ragcoder-suite-"))
    corpus = folder / "corpus"
    corpus.mkdir()
    for name, text in SUITE_DOCS.items():
        (corpus / name).write_text(text)
    index_paths([corpus], index_path=folder / "index", embeddings=embeddings, progress=False)
    return folder


class _SuiteBase(RetrieversIntegrationTests):
    index_folder: Path
    suite_embeddings: Embeddings

    @property
    def retriever_constructor(self) -> type[CodeDocRetriever]:
        return CodeDocRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index_path": str(self.index_folder / "index"), "embeddings": self.suite_embeddings}

    @property
    def retriever_query_example(self) -> str:
        return "retrieval notes about ranking"


class TestRetrieverStandardSuiteHashing(_SuiteBase):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def retrieval_suite_index(cls) -> Any:
        cls.suite_embeddings = HashingEmbeddings(64)
        cls.index_folder = _build_index(cls.suite_embeddings)
        yield
        shutil.rmtree(cls.index_folder, ignore_errors=True)


@pytest.mark.slow
class TestRetrieverStandardSuiteRealEmbedder(_SuiteBase):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def retrieval_suite_index(cls) -> Any:
        from ragcoder.chains.retrieval.embeddings import load_embeddings

        cls.suite_embeddings = load_embeddings()
        cls.index_folder = _build_index(cls.suite_embeddings)
        yield
        shutil.rmtree(cls.index_folder, ignore_errors=True)
