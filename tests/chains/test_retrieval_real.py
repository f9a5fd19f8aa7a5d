"""Real path: the all-MiniLM-L6-v2 embedder and a persistent Chroma index in a temp folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ragcoder.chains.retrieval.indexing import index_paths, index_stdlib
from ragcoder.chains.retrieval.retriever import open_retriever

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def retrieval_real_embeddings():
    from ragcoder.chains.retrieval.embeddings import load_embeddings

    return load_embeddings()


def test_real_embedder_vectors_are_normalised_and_cached(retrieval_real_embeddings) -> None:
    from ragcoder.chains.retrieval.embeddings import load_embeddings

    vector = retrieval_real_embeddings.embed_query("read a file")
    assert len(vector) == 384
    assert sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-4)
    assert load_embeddings() is retrieval_real_embeddings  # one model per process


def test_real_index_reopen_incremental_and_delete(
    tmp_path: Path,
    retrieval_corpus: Path,
    retrieval_real_embeddings,
) -> None:
    index_path = tmp_path / "idx"
    first = index_paths(
        [retrieval_corpus], index_path=index_path, embeddings=retrieval_real_embeddings, progress=False
    )
    assert (first.units_indexed, first.units_excluded) == (4, 1) and first.chunks_added >= 7

    # semantic match without shared words: only the real embedder can do this
    vector = open_retriever(index_path, k=1, mode="vector", embeddings=retrieval_real_embeddings)
    assert vector.invoke("surface of a round shape")[0].metadata["symbol"] == "circle_area"
    hybrid = open_retriever(index_path, k=3, embeddings=retrieval_real_embeddings)
    assert hybrid.invoke("make a url slug from a title")[0].metadata["symbol"] == "slugify"

    # reopen from a fresh process: the index persisted, the default embedder loads by itself
    script = textwrap.dedent(
        f"""
        import json
        from ragcoder.chains.retrieval.retriever import open_retriever
        docs = open_retriever({str(index_path)!r}, k=2).invoke("connect to a sqlite database")
        print(json.dumps([d.metadata["source"] for d in docs]))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])[0].endswith("guide.md")

    unchanged = index_paths(
        [retrieval_corpus], index_path=index_path, embeddings=retrieval_real_embeddings, progress=False
    )
    assert (unchanged.units_indexed, unchanged.units_unchanged, unchanged.chunks_added) == (0, 4, 0)

    (retrieval_corpus / "pkg/geometry.py").write_text(
        "def triangle_area(base, height):\n    return base * height / 2\n"
    )
    (retrieval_corpus / "docs/guide.md").unlink()
    changed = index_paths(
        [retrieval_corpus], index_path=index_path, embeddings=retrieval_real_embeddings, progress=False
    )
    assert (changed.units_indexed, changed.units_unchanged, changed.units_removed) == (1, 2, 1)
    top = open_retriever(index_path, k=1, embeddings=retrieval_real_embeddings).invoke("area of a triangle")
    assert top[0].metadata["symbol"] == "triangle_area"
    everything = open_retriever(index_path, k=50, embeddings=retrieval_real_embeddings).invoke(
        "anything at all"
    )
    assert {d.metadata["symbol"] for d in everything}.isdisjoint(
        {"circle_area", "Vector", "Guide > Databases"}
    )


def test_real_empty_index_gives_no_context(tmp_path: Path, retrieval_real_embeddings) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    index_paths([empty], index_path=tmp_path / "idx", embeddings=retrieval_real_embeddings, progress=False)
    for mode in ("hybrid", "vector", "bm25"):
        retriever = open_retriever(
            tmp_path / "idx", mode=mode, mmr=True, embeddings=retrieval_real_embeddings
        )  # type: ignore[arg-type]
        assert retriever.invoke("how do I sort a list") == []


def test_real_stdlib_subset_answers_api_questions(tmp_path: Path, retrieval_real_embeddings) -> None:
    stats = index_stdlib(
        index_path=tmp_path / "idx",
        embeddings=retrieval_real_embeddings,
        progress=False,
        modules=("json", "heapq", "csv"),
    )
    assert stats.units_indexed == 3
    retriever = open_retriever(tmp_path / "idx", k=5, embeddings=retrieval_real_embeddings)
    assert "json.loads" in [d.metadata["symbol"] for d in retriever.invoke("turn a JSON string into a dict")]
    assert "heapq.nlargest" in [
        d.metadata["symbol"] for d in retriever.invoke("the 3 biggest values of a list")
    ]
    mmr = open_retriever(tmp_path / "idx", k=5, mmr=True, embeddings=retrieval_real_embeddings)
    assert len({d.metadata["symbol"] for d in mmr.invoke("read rows from a csv file")}) == 5


def test_real_model_names_the_api_and_the_hybrid_retriever_puts_it_first(
    tmp_path: Path, retrieval_real_embeddings, qwen_chat
) -> None:
    """Generation-augmented retrieval with the real default model: the request's words are not the
    doc's, the model knows the API's name, and the index confirms it."""
    from ragcoder.chains.retrieval.api_guess import load_api_guesser

    index_stdlib(
        index_path=tmp_path / "idx",
        embeddings=retrieval_real_embeddings,
        progress=False,
        modules=("shutil", "json", "heapq"),
    )
    request = "duplicate a folder with all of its files into a backup location"
    guesser = load_api_guesser()
    guesses = guesser.invoke(request)
    assert "shutil.copytree" in guesses, guesses
    retriever = open_retriever(tmp_path / "idx", k=5, embeddings=retrieval_real_embeddings)
    retriever.api_guesser = guesser
    assert retriever.invoke(request)[0].metadata["symbol"] == "shutil.copytree"
