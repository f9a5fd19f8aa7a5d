"""Score fusion, exact-name boosts, duplicate collapsing and the benchmark's fixed question split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from ragcoder.chains.retrieval.fusion import (
    Candidate,
    code_names,
    collapse_duplicates,
    convex_fusion,
    name_match_boost,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _hit(id_: str, score: float, symbol: str = "", kind: str = "api-doc", **extra: float) -> Candidate:
    return Candidate(id_, id_, {"symbol": symbol or id_, "kind": kind}, score, **extra)


def test_convex_fusion_weighs_normalised_cosine_against_relative_bm25() -> None:
    vector = [_hit("a", 0.9, similarity=0.9), _hit("b", 0.7, similarity=0.7), _hit("c", 0.5, similarity=0.5)]
    lexical = [_hit("c", 12.0, lexical=12.0), _hit("d", 6.0, lexical=6.0)]
    asked: list[list[str]] = []

    def similarity_of(ids: list[str]) -> list[float]:
        asked.append(ids)
        return [0.3 for _ in ids]

    fused = convex_fusion(vector, lexical, 0.5, similarity_of)
    scores = {c.id: c.score for c in fused}
    assert asked == [["d"]]  # only the chunk BM25 found alone needs its cosine
    assert scores["a"] == pytest.approx(0.5 * 1.0)
    assert scores["c"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert scores["d"] == pytest.approx(0.5 * (0.3 - 0.5) / 0.4 + 0.5 * 0.5)
    assert fused[0].id in {"a", "c"} and fused[-1].id == "d"
    assert convex_fusion(vector, lexical, 0.0, similarity_of)[0].id == "a"  # weight 0: vector order
    only_vector = convex_fusion(vector, [], 0.3, similarity_of)
    assert [c.id for c in only_vector] == ["a", "b", "c"]


def test_code_names_are_only_names_written_like_code() -> None:
    assert code_names("use json.loads or `groupby` and sorted() on a ChainMap, read_csv") == {
        "json.loads",
        "groupby",
        "sorted",
        "chainmap",
        "read_csv",
    }
    assert code_names("pause the program for a few seconds with sleep") == set()


def test_name_match_boost_moves_the_named_symbol_up() -> None:
    ranked = [_hit("x", 0.9, "heapq.heappush"), _hit("y", 0.5, "json.loads"), _hit("z", 0.4, "os.path.join")]
    boosted = name_match_boost("call json.loads() on it", ranked, 0.5)
    assert [c.id for c in boosted] == ["y", "x", "z"]
    tail = name_match_boost("what does path.join do", [_hit("z", 0.1, "os.path.join"), _hit("w", 0.2)], 0.5)
    assert tail[0].id == "z"  # a dotted tail of the symbol counts
    unchanged = [_hit("x", 0.9), _hit("y", 0.5)]
    assert name_match_boost("plain words only", unchanged, 0.5) == unchanged


def test_collapse_keeps_one_chunk_per_api_symbol_and_credits_the_second() -> None:
    candidates = [
        _hit("pydoc-loads", 0.8, "json.loads"),
        _hit("rest-loads", 0.6, "json.loads"),
        _hit("third-loads", 0.5, "json.loads"),
        _hit("dumps", 0.85, "json.dumps"),
        _hit("guide-1", 0.7, "Guide", kind="rest"),
        _hit("guide-2", 0.65, "Guide", kind="rest"),  # prose chunks are never merged
    ]
    collapsed = collapse_duplicates(candidates, 0.25)
    assert [c.id for c in collapsed] == ["pydoc-loads", "dumps", "guide-1", "guide-2"]
    assert collapsed[0].score == pytest.approx(0.8 + 0.25 * 0.6)
    plain = collapse_duplicates(candidates, 0.0)
    assert [c.id for c in plain] == ["dumps", "pydoc-loads", "guide-1", "guide-2"]


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "retrieval_bench", REPO_ROOT / "bench" / "retrieval_bench.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("retrieval_bench", module)
    spec.loader.exec_module(module)
    return module


def test_bench_question_split_is_fixed_and_balanced() -> None:
    bench = _load_bench()
    questions = bench.load_questions()
    halves = [bench.question_half(q["question"]) for q in questions]
    assert set(halves) == {"tuning", "held-out"}
    assert abs(halves.count("tuning") - halves.count("held-out")) <= len(questions) // 5
    # the rule is a hash of the text: stable across runs and machines
    assert bench.question_half("how do I turn a JSON string into a Python dict") == "tuning"
    assert len({q["question"] for q in questions}) == len(questions)  # no duplicates across halves
