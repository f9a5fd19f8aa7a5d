"""Sentence embeddings through ONNX Runtime: the vectors of sentence-transformers, faster queries.

Why: on CPU a query through ONNX Runtime takes a fraction of torch's time for the same vector (the
export is checked against torch, ``MIN_COSINE``), and opening the cached ONNX file never imports
torch, so the retriever starts faster (docs/benchmarks.md, "Retrieval", ``bench/retrieval_bench.py``).
The transformer is exported once with torch (``export_onnx``: seconds) into
``cache_dir()/embedders``, checked against torch, and reused while the model, torch, onnx and
transformers stay the same.

Only the common layout is supported: a Transformer module with a fast tokenizer (``tokenizer.json``),
mean pooling, optionally Normalize. Anything else raises ``UnsupportedEmbedderError``: use torch then.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from ragcoder.chains.paths import cache_dir

from ragcoder.errors import UnsupportedEmbedderError

log = logging.getLogger(__name__)

BATCH_SIZE = 32  # as sentence-transformers (and load_embeddings' torch path) batch documents
MIN_COSINE = 0.9999  # export check: each probe vector against torch's
EXPORT_RECIPE = "1"  # part of the cache key: bump when export_onnx changes what it writes
# Different lengths in one padded batch (the last one is truncated), so the check covers padding and truncation.
PROBE_TEXTS = (
    "x",
    "read a json file into a dict",
    "def load(path):\n    with open(path) as handle:\n        return json.load(handle)",
    " ".join(["split each line into words and count how often every word occurs"] * 60),
)

Encode = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


def _read_json(path: Path) -> dict[str, Any] | list[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnsupportedEmbedderError(f"cannot read {path.name}: {exc}") from exc


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def read_layout(folder: Path) -> tuple[Path, int, bool]:
    """(transformer folder, max_seq_length, has Normalize) of a sentence-transformers folder, if supported."""
    modules = _read_json(folder / "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UnsupportedEmbedderError(f"modules {kinds}: only Transformer, Pooling[, Normalize]")
    pooling = _read_json(folder / modules[1].get("path", "") / "config.json")
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if modes != ["pooling_mode_mean_tokens"]:
        raise UnsupportedEmbedderError(f"pooling {modes}: only mean pooling")
    transformer = folder / modules[0].get("path", "")
    settings = _read_json(transformer / "sentence_bert_config.json")
    if settings.get("do_lower_case") or not isinstance(settings.get("max_seq_length"), int):
        raise UnsupportedEmbedderError("sentence_bert_config.json: needs max_seq_length, no do_lower_case")
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file() and _read_json(st_config).get("default_prompt_name"):
        raise UnsupportedEmbedderError("a default prompt is not supported")
    for name in ("config.json", "tokenizer.json"):  # tokenizer.json: a fast tokenizer
        if not (transformer / name).is_file():
            raise UnsupportedEmbedderError(f"no {name} in the folder")
    return transformer, settings["max_seq_length"], kinds[-1] == "Normalize"


def cache_path(folder: Path, transformer: Path) -> Path:
    """The cached ONNX file: folder name + a hash of what the export depends on."""
    candidates = (transformer / "model.safetensors", transformer / "pytorch_model.bin")
    weights = next((path for path in candidates if path.is_file()), None)
    if weights is None:
        raise UnsupportedEmbedderError("no model.safetensors or pytorch_model.bin in the folder")
    stat = weights.stat()
    digest = hashlib.sha256((transformer / "config.json").read_bytes())
    versions = [f"{name}={_version(name)}" for name in ("torch", "onnx", "transformers")]  # not imported
    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:{versions}:{EXPORT_RECIPE}".encode())
    return cache_dir() / "embedders" / f"{folder.name}-{digest.hexdigest()[:12]}.onnx"


def open_session(path: Path | str) -> Any:
    """An ONNX Runtime CPU session with all graph optimisations (imports onnxruntime, never torch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its optimiser warnings are noise here
    # Idle threads sleep instead of spinning: spinning threads steal the cores the LLM's torch
    # threads (or another process) need; alone it costs little (docs/benchmarks.md, "Retrieval").
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def mean_pool(hidden: np.ndarray, mask: np.ndarray, normalize: bool) -> np.ndarray:
    """Mean over real tokens (as sentence-transformers' Pooling), then optionally L2-normalised."""
    weights = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
    if normalize:
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return pooled


def export_onnx(transformer: Path, target: Path, encode: Encode) -> None:
    """Export the transformer with torch's TorchScript exporter, check it against torch, write atomically.

    The only code that imports torch and transformers. The file appears at ``target`` only after the
    check passes (tmp file in the same folder + ``os.replace``), so a crash never leaves half a file.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it; fail with a clear reason)
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise UnsupportedEmbedderError(f"export needs torch, transformers and onnx: {exc}") from exc

    class Wrapper(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0]

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
    except OSError as exc:  # e.g. a read-only cache: torch still works
        raise UnsupportedEmbedderError(f"cannot write the cache: {_one_line(exc)}") from exc
    try:
        ids, mask = encode(PROBE_TEXTS)  # padded: the traced attention keeps its mask
        reference = AutoTokenizer.from_pretrained(transformer)(
            list(PROBE_TEXTS), padding=True, truncation=True, max_length=ids.shape[1]
        )
        if reference["input_ids"] != ids.tolist() or reference["attention_mask"] != mask.tolist():
            raise UnsupportedEmbedderError("tokenizer.json does not reproduce the HF tokenizer's ids")
        # eval() on the wrapper too: the exporter restores the wrapper's mode on the whole model afterwards
        model = Wrapper(AutoModel.from_pretrained(transformer, dtype=torch.float32)).eval()
        names = ["input_ids", "attention_mask", "last_hidden_state"]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
            torch.onnx.export(
                model,
                (torch.from_numpy(ids), torch.from_numpy(mask)),
                tmp,
                dynamo=False,
                input_names=names[:2],
                output_names=names[2:],
                dynamic_axes={name: {0: "batch", 1: "seq"} for name in names},
                opset_version=17,
            )
        session = open_session(tmp)
        # the padded batch, then one text alone (another batch size and length: the axes are dynamic)
        for batch_ids, batch_mask in ((ids, mask), (ids[1:2, : mask[1].sum()], mask[1:2, : mask[1].sum()])):
            with torch.no_grad():
                expected = model(torch.from_numpy(batch_ids), torch.from_numpy(batch_mask)).numpy()
            got = session.run(None, {"input_ids": batch_ids, "attention_mask": batch_mask})[0]
            cosines = (mean_pool(expected, batch_mask, True) * mean_pool(got, batch_mask, True)).sum(axis=1)
            if cosines.min() < MIN_COSINE:
                raise UnsupportedEmbedderError(f"ONNX output differs from torch (cosine {cosines.min():.6f})")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, target)
    except UnsupportedEmbedderError:
        raise
    except Exception as exc:
        raise UnsupportedEmbedderError(f"export failed: {_one_line(exc)}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)


class OnnxSentenceEmbeddings(Embeddings):
    """A sentence-transformers folder run through ONNX Runtime; the same vectors as the torch path.

    ``model_name`` is the resolved folder, as ``HuggingFaceEmbeddings.model_name`` in
    ``load_embeddings``, so ``embedder_id`` (stored in indexes) does not depend on the backend.
    Safe to share between threads: the session runs concurrently, the tokenizer behind a lock.
    """

    def __init__(self, model_path: str | Path, *, normalize: bool | None = None) -> None:
        folder = Path(model_path).expanduser().resolve()
        self.model_name = str(folder)
        transformer, self.max_seq_length, has_normalize = read_layout(folder)
        self.normalize = has_normalize if normalize is None else normalize
        self._lock = threading.Lock()
        self._tokenizer = self._load_tokenizer(transformer / "tokenizer.json", self.max_seq_length)
        self.onnx_path = cache_path(folder, transformer)
        self._session = self._open_or_export(transformer)

    @staticmethod
    def _load_tokenizer(path: Path, max_length: int) -> Any:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        truncation = tokenizer.truncation or {}
        tokenizer.enable_truncation(max_length, direction=truncation.get("direction", "right"))
        padding = tokenizer.padding  # tokenizer.json may pad to a fixed length: pad per batch instead
        if padding is None:
            raise UnsupportedEmbedderError("tokenizer.json has no padding settings (pad token unknown)")
        tokenizer.enable_padding(
            **{k: padding[k] for k in ("direction", "pad_id", "pad_type_id", "pad_token")}
        )
        return tokenizer

    def _open_or_export(self, transformer: Path) -> Any:
        if self.onnx_path.is_file():
            try:
                return open_session(self.onnx_path)
            except Exception as exc:  # a corrupt or foreign file: export again, once
                log.warning("Re-exporting unreadable %s (%s)", self.onnx_path, _one_line(exc))
                self.onnx_path.unlink(missing_ok=True)
        export_onnx(transformer, self.onnx_path, self._encode)
        try:
            return open_session(self.onnx_path)
        except Exception as exc:
            raise UnsupportedEmbedderError(f"the exported file does not load: {_one_line(exc)}") from exc

    def _encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int64, padded to the longest text of the batch."""
        with self._lock:  # encode itself is read-only, but tokenizers objects are not documented thread-safe
            encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

    def _embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self._encode(texts)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return mean_pool(hidden, mask, self.normalize)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Sorted by length and batched by 32 so little padding is computed; returned in input order."""
        if not texts:
            return []
        texts = [t.replace("\n", " ") for t in texts]  # as HuggingFaceEmbeddings does before encoding
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [
            self._embed_batch([texts[i] for i in order[start : start + BATCH_SIZE]])
            for start in range(0, len(texts), BATCH_SIZE)
        ]
        vectors = np.empty((len(texts), batches[0].shape[1]), dtype=np.float32)
        vectors[order] = np.concatenate(batches)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
