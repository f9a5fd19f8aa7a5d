"""int8 dynamic quantization of a HF causal LM on CPU, and the on-disk cache of the result.

Activations are quantized on the fly **per row** (per token): ``ragcoder.chains.llm.int8_linear.RowwiseInt8Linear``.
torch's own dynamic ``Linear`` takes one activation scale for the whole input tensor, so in a batch
every prompt's rounding depended on the other prompts: the same prompt gave different code alone
and in a batch. Here each row is scaled into [-1, 1] before the int8 matmul and back after, so a
row's result no longer depends on its neighbours, and an outlier token no longer coarsens the
others' rounding; that brought the int8 model closer to fp32 and raised dev pass@1 (docs/results.md,
"int8 with one activation scale per token").

Weights are int8 (fbgemm) with **one scale per output channel**, not torch's default one per
matrix: a matrix's rows differ in size, and one scale for all of them rounds the small rows to a
few levels. Same speed, closer to fp32 (`bench/int8_bench.py`; docs/results.md, "int8 weights with
one scale per output channel").

Quantizing a 1.5B model takes most of a minute on 2 cores, so the int8 model of an installed known
model is pickled once next to its weights and loaded from there afterwards (keyed by the format,
torch and transformers versions; older or corrupt files are removed and rewritten).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ragcoder.chains.llm.models import ResolvedModel

CACHE_FORMAT = "int8rows-chan-v3"  # bump when the pickled modules change: older files are removed


def quantize_int8(model: Any, per_channel: bool = True) -> Any:
    """int8 weights and per-row int8 activations for every ``nn.Linear`` (CPU): several times fp32's
    speed; each layer's rows are independent of the rest of the batch (module docstring).

    ``per_channel``: one weight scale per output row instead of one per matrix (same speed, closer
    to fp32); False is torch's default, kept for the side-by-side bench.
    """
    import torch
    from torch import nn

    with warnings.catch_warnings():
        # torch.ao's dynamic quantization is deprecated in favour of torchao (not installed), and
        # warns once per quantized tensor; the API still works and is the fast path on this CPU.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_dynamic.*", category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning
        )
        spec: Any = (
            {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig} if per_channel else {nn.Linear}
        )
        model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
        from ragcoder.chains.llm.int8_linear import RowwiseInt8Linear

        dynamic = torch.ao.nn.quantized.dynamic.Linear
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is dynamic:
                    setattr(parent, name, RowwiseInt8Linear(child))
    return model


def int8_cache_file(resolved: ResolvedModel, adapter: str | None) -> Path | None:
    """Where the int8 model of an installed known model is kept (quantizing takes 25-60 s here)."""
    if resolved.kind != "known" or adapter:
        return None
    import torch
    import transformers

    folder = resolved.load_dir if resolved.gguf_file else resolved.load_dir.parent  # the model's own folder
    return folder / (f"{CACHE_FORMAT}-torch{torch.__version__}-transformers{transformers.__version__}.pt")


def read_int8_cache(path: Path) -> Any | None:
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
            return torch.load(path, weights_only=False)  # our own file, written by write_int8_cache
    except Exception:  # stale or corrupt: quantize again and rewrite it
        path.unlink(missing_ok=True)
        return None


def write_int8_cache(model: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(model, tmp)
        os.replace(tmp, path)
        for stale in path.parent.glob("int8*.pt"):  # older formats and versions: 1-2 GB each
            if stale != path:
                stale.unlink(missing_ok=True)
    except Exception:  # best effort: a read-only or full cache, or an unpicklable model, costs speed only
        tmp.unlink(missing_ok=True)
