"""Real path: all-MiniLM-L6-v2 through ONNX Runtime against the torch (sentence-transformers) embedder.

The model is exported once per session into a temp cache (seconds); tests that need another cache
state fake the export by copying that file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import ragcoder.chains.retrieval.embeddings as embeddings_module
import ragcoder.chains.retrieval.embeddings_onnx as onnx_module
from ragcoder.chains.retrieval.embeddings import default_model_path, embedder_id, load_embeddings
from ragcoder.chains.retrieval.embeddings_onnx import OnnxSentenceEmbeddings, UnsupportedEmbedderError

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]

DOCUMENTS = [
    "x",
    "",
    "read a file",
    "def circle_area(radius):\n    return math.pi * radius**2\n",
    "Connect to sqlite with a connection string and run queries.",
    "Ünïcödé, 日本語 and emoji 🎉 mixed with\ttabs",
    "class Vector:\n    def length(self):\n        return math.hypot(self.x, self.y)\n" * 3,
    " ".join(["parse the arguments, open each file, count the words and print a sorted table"] * 40),
    "how do I turn a JSON string into a Python dict",
    "Retry failed downloads three times.\n\nCaching results of slow network calls saves time.",
]


@pytest.fixture(scope="session")
def model_onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the exported default embedder (exported once per session)."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAGCODER_CACHE_DIR", str(cache))
        OnnxSentenceEmbeddings(default_model_path(), normalize=True)
    return cache


@pytest.fixture
def onnx_embedder(model_onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> OnnxSentenceEmbeddings:
    """The default embedder loaded from the session's cache (an export here fails the test)."""
    monkeypatch.setenv("RAGCODER_CACHE_DIR", str(model_onnx_cache))

    def no_export(*args: object) -> None:
        raise AssertionError("the cached ONNX file was not reused")

    monkeypatch.setattr(onnx_module, "export_onnx", no_export)
    return OnnxSentenceEmbeddings(default_model_path(), normalize=True)


@pytest.fixture(scope="module")
def torch_embedder():
    return load_embeddings(backend="torch")


def cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    left, right = np.asarray(a), np.asarray(b)
    return (left * right).sum(axis=1) / np.linalg.norm(left, axis=1) / np.linalg.norm(right, axis=1)


def test_onnx_vectors_match_torch(onnx_embedder, torch_embedder) -> None:
    assert len(onnx_embedder._encode([DOCUMENTS[7]])[0][0]) == 256  # the long one is truncated

    query = onnx_embedder.embed_query("read a json file into a dict")
    assert len(query) == 384 and all(type(v) is float for v in query)
    assert cosines([query], [torch_embedder.embed_query("read a json file into a dict")])[0] >= 0.9999

    documents = onnx_embedder.embed_documents(DOCUMENTS)
    expected = torch_embedder.embed_documents(DOCUMENTS)
    assert [len(v) for v in documents] == [384] * len(DOCUMENTS)
    assert cosines(documents, expected).min() >= 0.9999  # same order: index by index
    assert np.linalg.norm(documents, axis=1) == pytest.approx(1.0, abs=1e-5)
    # batching (padding next to longer texts) does not change a text's vector
    alone = [onnx_embedder.embed_query(text) for text in DOCUMENTS]
    assert cosines(documents, alone).min() >= 0.9999
    assert onnx_embedder.embed_documents([]) == []


def test_concurrent_queries_give_the_sequential_vectors(onnx_embedder) -> None:
    texts = [f"{text} {i}" for i, text in enumerate(DOCUMENTS * 4)]
    sequential = [onnx_embedder.embed_query(text) for text in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(onnx_embedder.embed_query, texts))
    assert cosines(concurrent, sequential).min() >= 0.99999


def test_second_load_reuses_the_cache_file(onnx_embedder, model_onnx_cache: Path) -> None:
    cached = onnx_embedder.onnx_path
    assert cached.parent == model_onnx_cache / "embedders"
    assert cached.name.startswith("model-") and cached.suffix == ".onnx"
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no tmp file left behind
    before = cached.stat().st_mtime_ns
    again = OnnxSentenceEmbeddings(default_model_path())  # export_onnx fails if called (fixture)
    assert again.onnx_path == cached and cached.stat().st_mtime_ns == before


def fake_export(source: Path, calls: list[Path], payload: bytes | None = None):
    """An ``export_onnx`` that copies the session's export (or writes ``payload``) and counts calls."""

    def export(transformer: Path, target: Path, encode: object) -> None:
        calls.append(target)
        if payload is None:
            shutil.copyfile(source, target)
        else:
            target.write_bytes(payload)

    return export


def test_corrupt_cache_file_is_reexported_once(
    onnx_embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGCODER_CACHE_DIR", str(tmp_path))
    target = tmp_path / "embedders" / onnx_embedder.onnx_path.name
    target.parent.mkdir()
    target.write_bytes(b"not an onnx file")
    calls: list[Path] = []
    monkeypatch.setattr(onnx_module, "export_onnx", fake_export(onnx_embedder.onnx_path, calls))
    with caplog.at_level(logging.WARNING, logger="ragcoder.chains.retrieval.embeddings_onnx"):
        repaired = OnnxSentenceEmbeddings(default_model_path(), normalize=True)
    assert calls == [target] and "Re-exporting unreadable" in caplog.text
    assert (
        cosines([repaired.embed_query("read a file")], [onnx_embedder.embed_query("read a file")])[0]
        > 0.99999
    )

    target.write_bytes(b"corrupt again")  # an export that still writes garbage: an error, not a loop
    calls.clear()
    monkeypatch.setattr(onnx_module, "export_onnx", fake_export(target, calls, payload=b"garbage"))
    with pytest.raises(UnsupportedEmbedderError, match="does not load"):
        OnnxSentenceEmbeddings(default_model_path())
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"1_Pooling/config.json": {"pooling_mode_cls_token": True}}, "only mean pooling"),
        ({"modules.json": [{"type": "sentence_transformers.models.Dense"}]}, "only Transformer"),
        ({"sentence_bert_config.json": {"do_lower_case": True}}, "no do_lower_case"),
        ({"tokenizer.json": None}, "no tokenizer.json"),
    ],
)
def test_unsupported_folders_raise_the_specific_error(tmp_path: Path, change: dict, reason: str) -> None:
    source = default_model_path()
    folder = tmp_path / "model"
    for relative in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "config.json"):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, folder / relative)
    (folder / "tokenizer.json").symlink_to(source / "tokenizer.json")
    for relative, value in change.items():
        path = folder / relative
        if value is None:
            path.unlink()
        elif isinstance(value, list):
            path.write_text(json.dumps(json.loads(path.read_text()) + value))
        else:
            path.write_text(json.dumps({**json.loads(path.read_text()), **value}))
    with pytest.raises(UnsupportedEmbedderError, match=reason):
        OnnxSentenceEmbeddings(folder)


def test_cached_embedder_does_not_import_torch(model_onnx_cache: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from ragcoder.chains.retrieval.embeddings import load_embeddings
        embeddings = load_embeddings()
        vector = embeddings.embed_query("read a file")
        print(json.dumps([type(embeddings).__name__, len(vector), "torch" in sys.modules]))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env["RAGCODER_CACHE_DIR"] = str(model_onnx_cache)
    env.pop("RAGCODER_EMBED_BACKEND", None)  # the default backend
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["OnnxSentenceEmbeddings", 384, False]


def test_auto_falls_back_to_torch_and_onnx_raises(
    torch_embedder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise UnsupportedEmbedderError("pooling ['pooling_mode_cls_token']: only mean pooling")

    monkeypatch.setattr(onnx_module, "OnnxSentenceEmbeddings", unsupported)
    # forget loaded embedders except the torch one, so nothing reloads a model
    monkeypatch.setattr(
        embeddings_module, "_loaded", {k: v for k, v in embeddings_module._loaded.items() if k[1] == "torch"}
    )
    monkeypatch.delenv("RAGCODER_EMBED_BACKEND", raising=False)
    with caplog.at_level(logging.WARNING, logger="ragcoder.chains.retrieval.embeddings"):
        assert load_embeddings() is torch_embedder
    assert "ONNX embedder unavailable" in caplog.text and "only mean pooling" in caplog.text

    with pytest.raises(UnsupportedEmbedderError, match="only mean pooling") as raised:
        load_embeddings(backend="onnx")
    assert "\n" not in str(raised.value)

    monkeypatch.setenv("RAGCODER_EMBED_BACKEND", "torch")  # the env var supplies the default
    assert load_embeddings() is torch_embedder
    with pytest.raises(ValueError, match="Unknown embedding backend"):
        load_embeddings(backend="tensorflow")


def test_embedder_id_is_the_same_for_both_backends(onnx_embedder, torch_embedder) -> None:
    assert onnx_embedder.model_name == torch_embedder.model_name
    assert embedder_id(onnx_embedder) == embedder_id(torch_embedder) == default_model_path().name
