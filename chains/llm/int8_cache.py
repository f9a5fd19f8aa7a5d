"""The on-disk int8 model of an installed known model, without the part it can rebuild exactly.

Quantizing a 1.5B model takes most of a minute on 2 cores, so the int8 model
(:func:`ragcoder.chains.llm.int8.quantize_int8`) of an installed known model is pickled once next to
its weights, keyed by the format, torch and transformers versions (another version writes its own
file and removes the older ones; a corrupt file is removed and rewritten).

Only the ``nn.Linear`` layers become int8: the token embedding stays dense fp32, 0.93 GB of Qwen's
2.5 GB. Its values are the GGUF's ``token_embd`` dequantized and rounded through the HF folder's
dtype on disk (fp16), so when that holds bit for bit at write time the file leaves the embedding
out and names the recipe (where the tensor lies in the GGUF), and loading rebuilds it from the
GGUF the install keeps. A few rows stored in the file check the rebuild on every load.
Otherwise the embedding is stored, as fp16 when that is exact.

Format v3 (the whole model, embedding included) is still read; it is never written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ragcoder.chains.llm.models import GGUF_NAME, ResolvedModel
from ragcoder.chains.llm.weights import sha256_of

CACHE_FORMAT = "int8rows-chan-v4"  # bump when the pickled modules change: older files are removed
LEGACY_FORMATS = ("int8rows-chan-v3",)  # read when there is no current file, never written
EMBEDDING_TENSOR = "token_embd.weight"  # the GGUF name of the token embedding
_ROUNDINGS = ("float16", "bfloat16", "float32")  # the dtypes an HF folder may hold the weights in
_CHECK_ROWS = 4


def cache_name(fmt: str = CACHE_FORMAT) -> str:
    import torch
    import transformers

    return f"{fmt}-torch{torch.__version__}-transformers{transformers.__version__}.pt"


def model_folder(resolved: ResolvedModel) -> Path:
    """An installed known model's own folder (where its GGUF, manifest and int8 file are)."""
    return resolved.load_dir if resolved.gguf_file else resolved.load_dir.parent


def int8_cache_file(resolved: ResolvedModel, adapter: str | None) -> Path | None:
    """Where the int8 model of an installed known model is written (None: not cached)."""
    if resolved.kind != "known" or adapter:
        return None
    return model_folder(resolved) / cache_name()


def cache_files_to_read(path: Path) -> list[Path]:
    """``path`` first, then the files of older formats for the same versions (an older install)."""
    legacy = [path.with_name(path.name.replace(CACHE_FORMAT, old, 1)) for old in LEGACY_FORMATS]
    return [path, *legacy]


def find_embedding(gguf: Path) -> dict[str, Any] | None:
    """Where the GGUF's token embedding lies: byte offset, stored shape and quantization type
    (reading the whole header takes seconds, so the int8 file keeps this and loads skip it)."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf)
    tensor = next((t for t in reader.tensors if t.name == EMBEDDING_TENSOR), None)
    if tensor is None:
        return None
    return {
        "offset": int(tensor.data_offset),
        "shape": list(tensor.data.shape),
        "type": int(tensor.tensor_type),
    }


def gguf_embedding(gguf: Path, where: dict[str, Any], rounding: str = "float32") -> Any:
    """The GGUF's token embedding as fp32, dequantized as transformers does, rounded via ``rounding``
    (slab by slab into the one tensor returned: :mod:`ragcoder.chains.llm.gguf_tensor`)."""
    from ragcoder.chains.llm.gguf_tensor import read_dequantized

    return read_dequantized(gguf, where["offset"], where["shape"], where["type"], rounding)


def _check_rows(weight: Any) -> dict[int, Any]:
    rows = weight.shape[0]
    return {int(i): weight[int(i)].clone() for i in {0, rows // 3, 2 * rows // 3, rows - 1}}


def _embedding_recipe(model: Any, gguf: Path) -> dict[str, Any] | None:
    """How to rebuild the model's embedding from ``gguf`` bit for bit; None when no way does."""
    import torch

    weight = model.get_input_embeddings().weight
    shared = sum(p is weight for _, p in model.named_parameters(remove_duplicate=False))
    if weight.dtype != torch.float32 or shared != 1 or not gguf.is_file():
        return None
    try:
        where = find_embedding(gguf)
        raw = gguf_embedding(gguf, where) if where else None
    except Exception:  # a GGUF the gguf package cannot read: the embedding is stored instead
        return None
    if raw is None or raw.shape != weight.shape:
        return None
    for rounding in _ROUNDINGS:
        if torch.equal(raw.to(getattr(torch, rounding)).to(torch.float32), weight):
            return {
                "source": "gguf",
                "file": gguf.name,
                "tensor": EMBEDDING_TENSOR,
                "rounding": rounding,
                **where,
            }
    return None


def write_int8_cache(model: Any, path: Path) -> dict[str, Any] | None:
    """Pickle the int8 ``model`` to ``path`` (atomically; older versions' files removed). Returns
    the file's record (size, sha256, how the embedding is kept), or None when it could not write."""
    import torch

    embedding = model.get_input_embeddings()
    weight = embedding.weight
    recipe = _embedding_recipe(model, path.parent / GGUF_NAME)
    if recipe is None:
        exact16 = weight.dtype == torch.float32 and torch.equal(weight.half().float(), weight)
        recipe = {"source": "file", "weight": weight.detach().half() if exact16 else weight.detach()}
    else:
        recipe["check_rows"] = _check_rows(weight.detach())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        embedding.weight = torch.nn.Parameter(weight.new_empty(0), requires_grad=weight.requires_grad)
        try:
            torch.save({"format": CACHE_FORMAT, "model": model, "embedding": recipe}, tmp)
        finally:
            embedding.weight = weight
        os.replace(tmp, path)
        for stale in path.parent.glob("int8*.pt"):  # older formats and versions: 1-2 GB each
            if stale != path:
                stale.unlink(missing_ok=True)
    except Exception:  # best effort: a read-only or full cache, or an unpicklable model, costs speed only
        tmp.unlink(missing_ok=True)
        return None
    return {"size": path.stat().st_size, "sha256": sha256_of(path), "embedding": recipe["source"]}


def read_int8_cache(path: Path) -> Any | None:
    """The int8 model pickled in ``path`` (this format or a legacy one), or None when there is
    none; a corrupt or stale file is removed (it is rebuilt)."""
    import torch

    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r".*torch\.ao\.quantization.*", category=DeprecationWarning
            )
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"TypedStorage is deprecated", category=UserWarning)
            saved = torch.load(path, weights_only=False)  # our own file, written by write_int8_cache
        if isinstance(saved, torch.nn.Module):  # a legacy format: the whole model
            return saved
        model, recipe = saved["model"], saved["embedding"]
        if recipe["source"] == "file":
            weight = recipe["weight"].to(torch.float32)
        else:
            weight = gguf_embedding(path.parent / recipe["file"], recipe, recipe["rounding"])
            if any(not torch.equal(weight[i], row) for i, row in recipe["check_rows"].items()):
                raise ValueError("the GGUF's embedding does not match the cached model")
        old = model.get_input_embeddings().weight
        model.get_input_embeddings().weight = torch.nn.Parameter(weight, requires_grad=old.requires_grad)
        return model
    except Exception:  # stale or corrupt: quantize again and rewrite it
        path.unlink(missing_ok=True)
        return None
