"""Indexing and retrieval with deterministic hashing embeddings and a real persistent Chroma."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from langchain_core.documents import Document
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.fusion import Candidate as _Candidate
from ragcoder.chains.retrieval.indexing import IndexMismatchError, index_paths, index_stdlib, open_collection
from ragcoder.chains.retrieval.retriever import BM25Index, open_retriever, reciprocal_rank_fusion, tokenize


@pytest.fixture(autouse=True)
def _small_usage_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """index_stdlib counts API usage over the whole stdlib (seconds); here one small file will do
    (tests/chains/test_api_usage.py covers the counting, test_retrieval_real.py the real scan)."""
    from ragcoder.chains.retrieval import api_usage

    source = tmp_path / "usage-src" / "uses.py"
    source.parent.mkdir()
    source.write_text("import json\njson.loads(s)\n")
    monkeypatch.setattr(api_usage, "source_files", lambda roots=None: [source])


def _symbols(documents: list[Document]) -> list[str]:
    return [d.metadata["symbol"] for d in documents]


def test_tokenize_splits_identifiers_stems_and_drops_stop_words() -> None:
    assert tokenize("How do I parse JSONDecoder objects?") == [
        "pars",
        "jsondecoder",
        "json",
        "decoder",
        "object",
    ]
    assert tokenize("read_csv parsing parsed") == ["read_csv", "read", "csv", "pars", "pars"]


def test_bm25_ranks_the_document_with_rare_query_terms_first() -> None:
    texts = ["the cat sat on the mat", "dogs chase cats in the park", "stock market prices fell", "cat food"]
    index = BM25Index(texts)
    hits = index.search("market prices", 10)
    assert [i for i, _ in hits] == [2]
    assert [i for i, _ in index.search("cat", 2)] == [3, 0]  # shorter document first, then the cap of 2
    assert index.search("unknownword", 5) == []


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    def ranking(*ids: str) -> list[_Candidate]:
        return [_Candidate(i, i, {}, 0.0) for i in ids]

    fused = reciprocal_rank_fusion([ranking("a", "b", "c"), ranking("c", "b", "d")], rrf_k=60)
    assert [c.id for c in fused][:2] == ["b", "c"] or [c.id for c in fused][:2] == ["c", "b"]
    assert [c.id for c in fused][-1] == "d"
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 62) or fused[0].score == pytest.approx(
        1 / 63 + 1 / 61
    )


def test_index_paths_stores_chunks_with_metadata_and_excludes_humaneval(
    retrieval_index: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    retriever = open_retriever(retrieval_index, k=20, mode="bm25", embeddings=retrieval_embeddings)
    documents = retriever.invoke("circle area radius slugify title vowels guide installing caching")
    sources = {Path(d.metadata["source"]).name for d in documents}
    assert {"geometry.py", "text_tools.py", "guide.md", "notes.txt"} <= sources
    assert not any("human" in d.metadata["source"].lower() for d in documents)
    area = next(d for d in documents if d.metadata["symbol"] == "circle_area")
    assert (area.metadata["start_line"], area.metadata["end_line"], area.metadata["kind"]) == (4, 6, "code")
    assert area.page_content.startswith("def circle_area(radius):")


@pytest.mark.parametrize("mode", ["vector", "bm25", "hybrid"])
def test_each_mode_finds_the_matching_chunk(
    retrieval_index: Path, retrieval_embeddings: HashingEmbeddings, mode: str
) -> None:
    retriever = open_retriever(retrieval_index, k=2, mode=mode, embeddings=retrieval_embeddings)  # type: ignore[arg-type]
    documents = retriever.invoke("turn a title into a url slug")
    assert len(documents) == (1 if mode == "bm25" else 2)  # BM25 returns only chunks sharing a word
    assert documents[0].metadata["symbol"] == "slugify"
    assert documents[0].metadata["score"] >= documents[-1].metadata["score"] > 0


def test_k_from_invoke_overrides_the_constructor(
    retrieval_index: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    retriever = open_retriever(retrieval_index, k=2, embeddings=retrieval_embeddings)
    assert len(retriever.invoke("vector length", k=5)) == 5
    assert len(retriever.invoke("vector length", k=1)) == 1
    assert retriever.invoke("vector length", k=0) == []


def test_score_threshold_drops_unrelated_chunks(
    retrieval_index: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    loose = open_retriever(retrieval_index, k=10, embeddings=retrieval_embeddings)
    strict = open_retriever(retrieval_index, k=10, score_threshold=0.3, embeddings=retrieval_embeddings)
    query = "count vowels in a word"
    assert len(loose.invoke(query)) > len(strict.invoke(query)) >= 1
    assert strict.invoke(query)[0].metadata["symbol"] == "count_vowels"
    assert (
        open_retriever(retrieval_index, k=10, score_threshold=0.999, embeddings=retrieval_embeddings).invoke(
            "zebra quantum"
        )
        == []
    )
    bm25_strict = open_retriever(
        retrieval_index, k=10, mode="bm25", score_threshold=1e6, embeddings=retrieval_embeddings
    )
    assert bm25_strict.invoke(query) == []


def test_mmr_returns_k_distinct_chunks(tmp_path: Path, retrieval_embeddings: HashingEmbeddings) -> None:
    corpus = tmp_path / "dups"
    corpus.mkdir()
    for i in range(4):  # four identical files and one different but related
        (corpus / f"copy{i}.md").write_text("# Sorting\n\nsort a list of numbers quickly\n")
    (corpus / "other.md").write_text("# Lists\n\nsort a list of words alphabetically with a key\n")
    index_paths([corpus], index_path=tmp_path / "idx", embeddings=retrieval_embeddings, progress=False)
    plain = open_retriever(tmp_path / "idx", k=2, embeddings=retrieval_embeddings)
    diverse = open_retriever(tmp_path / "idx", k=2, mmr=True, embeddings=retrieval_embeddings)
    query = "sort a list of numbers"
    assert {Path(d.metadata["source"]).name for d in plain.invoke(query)} <= {f"copy{i}.md" for i in range(4)}
    assert "other.md" in {Path(d.metadata["source"]).name for d in diverse.invoke(query)}
    assert len({d.page_content for d in diverse.invoke(query)}) == 2


def test_missing_and_empty_index_return_no_documents(
    tmp_path: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    missing = tmp_path / "nothing-here"
    assert open_retriever(missing, embeddings=retrieval_embeddings).invoke("anything") == []
    assert not missing.exists()  # querying does not create an index
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    stats = index_paths(
        [empty_folder], index_path=tmp_path / "idx", embeddings=retrieval_embeddings, progress=False
    )
    assert stats.chunks_added == 0
    for mode in ("hybrid", "vector", "bm25"):
        assert open_retriever(tmp_path / "idx", mode=mode, embeddings=retrieval_embeddings).invoke("x") == []  # type: ignore[arg-type]


def test_incremental_reindex_skips_unchanged_updates_changed_removes_deleted(
    tmp_path: Path, retrieval_corpus: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    index_path = tmp_path / "idx"
    first = index_paths(
        [retrieval_corpus], index_path=index_path, embeddings=retrieval_embeddings, progress=False
    )
    assert (first.units_indexed, first.units_unchanged, first.units_excluded) == (4, 0, 1)
    again = index_paths(
        [retrieval_corpus], index_path=index_path, embeddings=retrieval_embeddings, progress=False
    )
    assert (again.units_indexed, again.units_unchanged, again.chunks_added) == (0, 4, 0)

    (retrieval_corpus / "pkg/text_tools.py").write_text(
        "def reverse_words(s):\n    return ' '.join(s.split()[::-1])\n"
    )
    (retrieval_corpus / "docs/notes.txt").unlink()
    third = index_paths(
        [retrieval_corpus], index_path=index_path, embeddings=retrieval_embeddings, progress=False
    )
    assert (third.units_indexed, third.units_unchanged, third.units_removed) == (1, 2, 1)
    assert third.chunks_removed == 3  # two old functions + the notes paragraph pack

    retriever = open_retriever(index_path, k=50, mode="bm25", embeddings=retrieval_embeddings)
    symbols = _symbols(retriever.invoke("reverse words slugify title caching network retry"))
    assert "reverse_words" in symbols and "slugify" not in symbols
    assert not any("notes.txt" in d.metadata["source"] for d in retriever.invoke("caching retry downloads"))


def test_index_refuses_another_embedder(retrieval_index: Path) -> None:
    with pytest.raises(IndexMismatchError, match="built with embedder"):
        open_retriever(retrieval_index, embeddings=HashingEmbeddings(32)).invoke("x")


def test_index_stdlib_subset_is_incremental(tmp_path: Path, retrieval_embeddings: HashingEmbeddings) -> None:
    index_path = tmp_path / "idx"
    stats = index_stdlib(
        index_path=index_path,
        embeddings=retrieval_embeddings,
        progress=False,
        modules=("json", "heapq"),
        include_rest=False,
    )
    assert stats.units_indexed == 2 and stats.chunks_added > 15
    retriever = open_retriever(index_path, k=3, mode="bm25", embeddings=retrieval_embeddings)
    top = retriever.invoke("deserialize a JSON document string to a Python object")
    assert "json.loads" in _symbols(top)
    assert top[0].metadata["kind"] in {"api-doc", "module-doc"} and top[0].metadata["source"] == "json"
    again = index_stdlib(
        index_path=index_path,
        embeddings=retrieval_embeddings,
        progress=False,
        modules=("json",),
        include_rest=False,
    )
    assert (again.units_unchanged, again.units_removed, again.chunks_added) == (1, 1, 0)


FAKE_JSON_REST = """\
:mod:`json` --- JSON encoder and decoder
========================================

.. module:: json

.. function:: loads(s, *, cls=None)

   Deserialize *s* (a :class:`str` instance containing a JSON document) to a Python object.
"""


def test_index_stdlib_adds_debian_rest_pages_with_qualified_symbols(
    tmp_path: Path, retrieval_embeddings: HashingEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ragcoder.chains.retrieval.stdlib_corpus as corpus

    sources = tmp_path / "_sources" / "library"
    sources.mkdir(parents=True)
    (sources / "json.rst.txt").write_text(FAKE_JSON_REST)
    monkeypatch.setattr(corpus, "DEBIAN_DOC_SOURCES", sources)
    assert "python3.11-doc reST" in corpus.corpus_description(True)
    assert corpus.corpus_description(False).endswith("(reST excluded)")
    stats = index_stdlib(
        index_path=tmp_path / "idx",
        embeddings=retrieval_embeddings,
        progress=False,
        modules=("json",),
        include_rest=True,
    )
    assert stats.units_indexed == 2  # the pydoc module and its reST page
    retriever = open_retriever(tmp_path / "idx", k=50, mode="bm25", embeddings=retrieval_embeddings)
    loads = [
        d for d in retriever.invoke("deserialize a JSON document") if d.metadata["symbol"] == "json.loads"
    ]
    assert len(loads) == 1  # pydoc and reST both document it: one chunk per symbol is returned
    stored = open_collection(tmp_path / "idx", None, create=False)
    assert stored is not None
    rest = stored.get(where={"source": str(sources / "json.rst.txt")}, include=["metadatas"])["metadatas"]
    assert {(m["symbol"], m["kind"]) for m in rest} == {
        ("json --- JSON encoder and decoder", "rest"),
        ("json.loads", "api-doc"),
    }
    monkeypatch.setattr(corpus, "DEBIAN_DOC_SOURCES", tmp_path / "absent")
    assert "not installed" in corpus.corpus_description(True)
    again = index_stdlib(
        index_path=tmp_path / "idx",
        embeddings=retrieval_embeddings,
        progress=False,
        modules=("json",),
        include_rest=True,
    )
    assert (again.units_unchanged, again.units_removed) == (1, 1)  # without the docs: pydoc only


@pytest.fixture
def index_commands(monkeypatch: pytest.MonkeyPatch):
    """ragcoder.cli.commands.index_cmd (``index`` and ``search``) with the hashing embeddings."""
    from ragcoder.cli.commands import index_cmd

    monkeypatch.setattr(index_cmd, "load_embeddings", lambda model_path=None: HashingEmbeddings(64))
    return index_cmd


def test_index_command_indexes_paths_and_reports(
    tmp_path: Path, retrieval_corpus: Path, index_commands
) -> None:
    index_cmd, runner = index_commands, CliRunner()
    result = runner.invoke(
        index_cmd.index, [str(retrieval_corpus), "--index-path", str(tmp_path / "idx"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "4 indexed" in result.output and "1 excluded" in result.output
    nothing = runner.invoke(index_cmd.index, ["--index-path", str(tmp_path / "idx")])
    assert nothing.exit_code != 0 and "--stdlib" in nothing.output


def test_search_command_shows_what_the_retriever_finds(
    retrieval_index: Path, tmp_path: Path, index_commands
) -> None:
    import json

    index_cmd, runner = index_commands, CliRunner()
    found = runner.invoke(
        index_cmd.search, ["slug for a title", "--index-path", str(retrieval_index), "-k", "2"]
    )
    assert found.exit_code == 0, found.output
    assert found.output.startswith(" 1. slugify  (") and "pkg/text_tools.py:1-" in found.output
    assert "def slugify(title):" in found.output and " 3. " not in found.output
    as_json = runner.invoke(
        index_cmd.search,
        ["slug", "--index-path", str(retrieval_index), "--json", "--mode", "bm25", "-k", "1"],
    )
    record = json.loads(as_json.output)
    assert record["rank"] == 1 and record["symbol"] == "slugify" and "lower()" in record["text"]
    empty = runner.invoke(index_cmd.search, ["anything", "--index-path", str(tmp_path / "none")])
    assert empty.exit_code != 0 and "is empty" in empty.output and "ragcoder index --stdlib" in empty.output


def test_overlapping_roots_index_once_and_humaneval_is_never_indexed(
    tmp_path: Path, retrieval_corpus: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    roots = [retrieval_corpus, retrieval_corpus / "pkg", retrieval_corpus / "data" / "HumanEval.jsonl"]
    stats = index_paths(roots, index_path=tmp_path / "idx", embeddings=retrieval_embeddings, progress=False)
    assert (stats.units_indexed, stats.units_excluded) == (4, 2)
    everything = open_retriever(
        tmp_path / "idx", k=100, mode="vector", embeddings=retrieval_embeddings
    ).invoke("x")
    assert not any("has_close_elements" in d.page_content for d in everything)


def test_hybrid_cosines_for_bm25_only_chunks_match_chroma(
    retrieval_index: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    from ragcoder.chains.retrieval.retriever import _open_collection_cached
    from ragcoder.chains.retrieval.store import chunk_store

    collection, count = _open_collection_cached(retrieval_index.resolve(), "ragcoder")
    assert collection is not None and count > 3
    lexical = chunk_store(collection, retrieval_index.resolve(), "ragcoder")
    query = retrieval_embeddings.embed_query("turn a title into a url slug")
    result = collection.query(query_embeddings=[query], n_results=count, include=["distances"])
    chroma = {
        id_: 1.0 - distance for id_, distance in zip(result["ids"][0], result["distances"][0], strict=True)
    }
    ids = list(chroma)[-3:]  # the least similar: the kind BM25 finds and the vector pool misses
    assert lexical.similarities(collection, query, ids) == pytest.approx([chroma[i] for i in ids], abs=1e-5)


def test_hybrid_vector_hits_from_the_in_memory_store_match_chroma_and_survive_a_stale_store(
    retrieval_index: Path, retrieval_embeddings: HashingEmbeddings
) -> None:
    from dataclasses import replace

    from ragcoder.chains.retrieval.retriever import _open_collection_cached, _vector_search
    from ragcoder.chains.retrieval.store import chunk_store

    collection, count = _open_collection_cached(retrieval_index.resolve(), "ragcoder")
    assert collection is not None
    store = chunk_store(collection, retrieval_index.resolve(), "ragcoder")
    query = retrieval_embeddings.embed_query("turn a title into a url slug")
    from_chroma = _vector_search(collection, query, count, None)  # texts and metadata from SQLite
    assert _vector_search(collection, query, count, store) == from_chroma
    stale = replace(store, ids=store.ids[1:], texts=store.texts[1:], metadatas=store.metadatas[1:])
    assert _vector_search(collection, query, count, stale) == from_chroma  # a chunk it lacks: asks Chroma
