"""int8 dynamic quantization of a HF causal LM on CPU, and the on-disk cache of the result.

Quantizing Qwen 1.5B takes 25-60 s on 2 cores, so the int8 model of an installed known model is
pickled once next to its weights and loaded from there afterwards (keyed by torch and transformers
versions; a stale or corrupt file is rewritten).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from chains.models import ResolvedModel


def quantize_int8(model: Any) -> Any:
    """int8 dynamic quantization of every ``nn.Linear`` (CPU): 17 vs 2.3 tok/s on Qwen 1.5B here."""
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
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def int8_cache_file(resolved: ResolvedModel, adapter: str | None) -> Path | None:
    """Where the int8 model of an installed known model is kept (quantizing takes 25-60 s here)."""
    if resolved.kind != "known" or adapter:
        return None
    import torch
    import transformers

    return (
        resolved.load_dir.parent / f"int8-torch{torch.__version__}-transformers{transformers.__version__}.pt"
    )


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
    except Exception:  # best effort: a read-only or full cache, or an unpicklable model, costs speed only
        tmp.unlink(missing_ok=True)
