"""The API popularity prior: counted from source files, written beside the index, used in ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragcoder.chains.retrieval import api_usage
from ragcoder.chains.retrieval.api_usage import (
    build_usage,
    ensure_usage,
    read_usage,
    source_files,
    usage_prior,
)
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.fusion import Candidate, usage_boost
from ragcoder.chains.retrieval.indexing import index_stdlib
from ragcoder.chains.retrieval.retriever import open_retriever

SOURCES = {
    "app/a.py": "import time\nimport json\n\ntime.sleep(1)\ndata = json.loads(s)\nfor x, y in zip(a, b):\n    pass\n",
    "app/b.py": "from json import loads, dumps\nimport time\ntime.sleep(2)\nstamp = datetime.now().strftime('%Y')\n",
    "app/c.py": "import os.path\nroot, ext = os.path.splitext(name)\nitems = zip(a, b)\n",
    "site-packages/vendored.py": "time.sleep(0)\nsignal.pause()\n",
}


@pytest.fixture
def usage_sources(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    for name, text in SOURCES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_document_frequency_of_functions_builtins_and_methods(usage_sources: Path) -> None:
    files = source_files([usage_sources])
    assert all("site-packages" not in f.parts for f in files) and len(files) == 3
    usage = build_usage(
        {
            "time.sleep": "time",
            "json.loads": "json",
            "zip": "builtins",
            "os.path.splitext": "os.path",
            "datetime.datetime.strftime": "datetime",
            "signal.pause": "signal",
        },
        files,
    )
    assert usage == {
        "time.sleep": 2,
        "json.loads": 2,  # one `json.loads`, one `from json import loads`
        "zip": 2,
        "os.path.splitext": 1,
        "datetime.datetime.strftime": 1,  # `.strftime(` in a file that names `datetime`
        "signal.pause": 0,  # only in site-packages, which is left out
    }
    prior = usage_prior(usage)
    assert prior["time.sleep"] == 1.0 and 0 < prior["os.path.splitext"] < 1 and "signal.pause" not in prior


def test_the_table_is_written_once_per_interpreter_and_symbol_set(
    tmp_path: Path, usage_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_usage, "source_files", lambda roots=None: source_files([usage_sources]))
    symbols = {"time.sleep": "time", "zip": "builtins"}
    path = ensure_usage(tmp_path, symbols)
    assert read_usage(tmp_path) == {"time.sleep": 2, "zip": 2}
    stamp = path.stat().st_mtime_ns
    ensure_usage(tmp_path, symbols)
    assert path.stat().st_mtime_ns == stamp  # up to date: not recounted
    ensure_usage(tmp_path, {"time.sleep": "time"})
    assert read_usage(tmp_path) == {"time.sleep": 2}
    path.write_text(json.dumps({"format": 999, "usage": {"x": 1}}))
    assert read_usage(tmp_path) == {}  # an unknown format is ignored, not trusted
    assert read_usage(tmp_path / "missing") == {}


def test_usage_boost_breaks_near_ties_towards_the_used_api() -> None:
    pause = Candidate("p", "signal.pause", {"symbol": "signal.pause", "kind": "api-doc"}, 0.80)
    sleep = Candidate("s", "time.sleep", {"symbol": "time.sleep", "kind": "api-doc"}, 0.75)
    guide = Candidate("g", "guide", {"symbol": "time.sleep", "kind": "markdown"}, 0.78)
    ranked = usage_boost([pause, sleep, guide], {"time.sleep": 1.0}, 0.2)
    assert [c.id for c in ranked] == ["s", "p", "g"]  # only API chunks get the prior
    assert usage_boost([pause, sleep], {"time.sleep": 1.0}, 0.0)[0].id == "p"


def test_index_stdlib_writes_the_prior_and_the_retriever_uses_it(
    tmp_path: Path, usage_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_usage, "source_files", lambda roots=None: source_files([usage_sources]))
    embeddings = HashingEmbeddings(64)
    index_stdlib(index_path=tmp_path / "idx", embeddings=embeddings, progress=False, modules=("json",))
    usage = read_usage(tmp_path / "idx")
    assert usage["json.loads"] == 2 and usage["json.dumps"] == 1 and usage["json.load"] == 0
    question = "serialize or deserialize json"
    plain = open_retriever(tmp_path / "idx", k=10, embeddings=embeddings)
    plain.usage_weight = 0.0
    boosted = open_retriever(tmp_path / "idx", k=10, embeddings=embeddings)
    boosted.usage_weight = 5.0  # large: the most used API must come first
    assert boosted.invoke(question)[0].metadata["symbol"] == "json.loads"
    scores = {d.metadata["symbol"]: d.metadata["score"] for d in plain.invoke(question)}
    lifted = {d.metadata["symbol"]: d.metadata["score"] for d in boosted.invoke(question)}
    assert lifted["json.loads"] > scores["json.loads"]
    assert lifted.get("json.load") == scores.get("json.load")  # unused: no prior
