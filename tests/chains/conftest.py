"""Shared fixtures for tests/chains. Model fixtures are named ``model_*``, retrieval ones ``retrieval_*``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def model_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty RAGCODER_CACHE_DIR for this test (models_dir() is under it)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAGCODER_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def model_tiny_chat(model_tiny_dir: Path):
    """The tiny random model as a chat model (fp32, 24 new tokens at most)."""
    from ragcoder.chains.llm.chat_model import load_chat_model

    return load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=24)


# -- retrieval fixtures (owned by the retrieval work) ---------------------------------------------


RETRIEVAL_CORPUS_FILES = {
    "pkg/geometry.py": (
        "import math\n\n\n"
        'def circle_area(radius):\n    """Area of a circle from its radius."""\n    return math.pi * radius**2\n\n\n'
        'class Vector:\n    """A 2-d vector with a length."""\n\n    def length(self):\n        return math.hypot(self.x, self.y)\n'
    ),
    "pkg/text_tools.py": (
        'def slugify(title):\n    """Turn a title into a lowercase url slug with dashes."""\n'
        "    return '-'.join(title.lower().split())\n\n\n"
        'def count_vowels(word):\n    """Count vowels in a word."""\n    return sum(ch in \'aeiou\' for ch in word)\n'
    ),
    "docs/guide.md": (
        "# Guide\n\nHow to use the toolkit.\n\n## Installing\n\nRun pip install toolkit in a virtual environment.\n\n"
        "## Databases\n\nConnect to sqlite with a connection string and run queries.\n"
    ),
    "docs/notes.txt": "Caching results of slow network calls saves time.\n\nRetry failed downloads three times.\n",
    "data/HumanEval.jsonl": '{"task_id": "HumanEval/0", "prompt": "def has_close_elements"}\n',
    "human_eval/solutions.py": "def has_close_elements(numbers, threshold):\n    return False\n",
}


@pytest.fixture
def retrieval_embeddings():
    """Deterministic 64-d hashing bag-of-words embeddings (no model)."""
    from ragcoder.chains.retrieval.embeddings import HashingEmbeddings

    return HashingEmbeddings(64)


@pytest.fixture
def retrieval_corpus(tmp_path):
    """A small folder of code and docs, including HumanEval files that must never be indexed."""
    root = tmp_path / "corpus"
    for relative, text in RETRIEVAL_CORPUS_FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def retrieval_index(tmp_path, retrieval_corpus, retrieval_embeddings):
    """``retrieval_corpus`` indexed with the hashing embeddings; returns the index folder."""
    from ragcoder.chains.retrieval.indexing import index_paths

    index_path = tmp_path / "index"
    index_paths([retrieval_corpus], index_path=index_path, embeddings=retrieval_embeddings, progress=False)
    return index_path
