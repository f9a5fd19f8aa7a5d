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

The int8 model of an installed known model is kept on disk: :mod:`ragcoder.chains.llm.int8_cache`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ragcoder.chains.llm.int8_cache import int8_cache_file

__all__ = ["int8_cache_file", "quantize_int8"]  # int8_cache_file: where bench/engine_bench.py looks


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
