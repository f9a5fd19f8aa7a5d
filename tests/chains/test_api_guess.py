"""Generation-augmented retrieval: parsing the model's API names, and the hybrid retriever moving the
named chunks up (scripted model and hashing embeddings here; the real model in test_retrieval_real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda
from ragcoder.chains.retrieval.api_guess import api_guess_chain, parse_api_names
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.indexing import index_stdlib
from ragcoder.chains.retrieval.retriever import open_retriever

from tests.fakes import scripted


def test_parse_api_names_takes_the_first_name_per_line() -> None:
    text = "1. `shutil.copytree()`\n- shutil.copy2(src, dst)\n\nshutil.copytree\nos.walk\nglob.glob"
    assert parse_api_names(text) == ["shutil.copytree", "shutil.copy2", "os.walk"]
    assert parse_api_names("sorted\nlist.sort", limit=5) == ["sorted", "list.sort"]
    assert parse_api_names("") == []


def test_api_guess_chain_asks_the_model_for_names_and_parses_them() -> None:
    model = scripted([("", "heapq.nsmallest\nheapq.heappush\nsorted\nmin")])
    chain = api_guess_chain(model, count=2)
    assert chain.invoke("the three smallest numbers of a list") == ["heapq.nsmallest", "heapq.heappush"]
    assert "the three smallest numbers of a list" in model.prompts[-1]
    assert "2 fully qualified names" in model.prompts[-1]


@pytest.fixture(scope="module")
def stdlib_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    index_path = tmp_path_factory.mktemp("guess") / "idx"
    index_stdlib(
        index_path=index_path,
        embeddings=HashingEmbeddings(64),
        progress=False,
        modules=("json", "heapq", "shutil"),
        include_rest=False,
    )
    return index_path


def _symbols(retriever, query: str) -> list[str]:
    return [d.metadata.get("symbol", "") for d in retriever.invoke(query)]


def test_a_guessed_symbol_moves_to_the_top_even_when_neither_ranking_found_it(stdlib_subset: Path) -> None:
    embeddings = HashingEmbeddings(64)
    query = "make a duplicate of a folder and everything inside it"
    plain = open_retriever(stdlib_subset, k=5, embeddings=embeddings)
    assert "shutil.copytree" not in _symbols(plain, query)[:1]
    asked: list[str] = []

    def guess(question: str) -> list[str]:
        asked.append(question)
        return ["made.up", "shutil.copytree", "json.dumps"]

    guessing = open_retriever(stdlib_subset, k=5, embeddings=embeddings)
    guessing.api_guesser = RunnableLambda(guess)
    symbols = _symbols(guessing, query)
    assert asked == [query]
    assert symbols[0] == "shutil.copytree"  # a made-up first guess costs nothing
    assert len(set(symbols)) == len(symbols)
    deep_plain = _symbols(plain.model_copy(update={"k": 30}), query)
    deep_guessing = _symbols(guessing.model_copy(update={"k": 30}), query)
    assert deep_guessing.index("json.dumps") < deep_plain.index("json.dumps")  # the second guess
    guessing.guess_weight = 0.0
    assert _symbols(guessing, query) == _symbols(plain, query)


def test_guesses_match_dotted_tails_and_only_hybrid_asks(stdlib_subset: Path) -> None:
    embeddings = HashingEmbeddings(64)
    calls: list[str] = []
    guesser = RunnableLambda(lambda q: calls.append(q) or ["JSONDecoder.decode"])
    hybrid = open_retriever(stdlib_subset, k=3, embeddings=embeddings)
    hybrid.api_guesser, hybrid.guess_weight = guesser, 2.0  # hashing vectors: the cosine part is noise
    assert _symbols(hybrid, "turn text into objects")[0] == "json.JSONDecoder.decode"
    for mode in ("vector", "bm25"):
        other = open_retriever(stdlib_subset, k=3, mode=mode, embeddings=embeddings)  # type: ignore[arg-type]
        other.api_guesser = guesser
        other.invoke("turn text into objects")
    assert len(calls) == 1


def test_names_are_looked_up_by_symbol_tail_without_case_and_builtins_bare() -> None:
    from ragcoder.chains.retrieval.lexical import BM25Index
    from ragcoder.chains.retrieval.store import ChunkStore

    symbols = ["sorted", "pathlib.Path.glob", "json.loads", "json"]
    kinds = ["api-doc", "api-doc", "api-doc", "module-doc"]
    texts = [f"doc of {s}" for s in symbols]
    metadatas = [{"symbol": s, "kind": k} for s, k in zip(symbols, kinds, strict=True)]
    store = ChunkStore("g", [f"id{i}" for i in range(4)], texts, metadatas, BM25Index(texts))
    assert store.rows_named(["builtins.sorted"]) == [(0, 0)]
    assert store.rows_named(["made.up", "Path.glob", "JSON.LOADS", "json"]) == [(0, 1), (1, 2)]
    assert store.rows_named(["glob", "loads"]) == []  # one bare word names too much to trust


def test_leaving_out_the_stdlib_corpus_leaves_out_its_docs_and_the_guess(stdlib_subset: Path) -> None:
    calls: list[str] = []
    for mode in ("hybrid", "vector", "bm25"):
        retriever = open_retriever(stdlib_subset, k=5, mode=mode, embeddings=HashingEmbeddings(64))  # type: ignore[arg-type]
        retriever.api_guesser = RunnableLambda(lambda q: calls.append(q) or ["shutil.copytree"])
        assert retriever.invoke("copy a folder", exclude_corpus="stdlib") == []  # this index: stdlib only
        assert len(retriever.invoke("copy a folder", exclude_corpus="files")) == 5
    assert calls == ["copy a folder"]  # hybrid, and only when the stdlib may be used
