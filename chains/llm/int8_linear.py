"""``RowwiseInt8Linear``: an int8 ``nn.Linear`` whose activations are quantized per row (per token).

Kept apart from ``ragcoder.chains.llm.int8`` because it imports torch at module level (the int8 cache pickles
instances of it, so it must be importable by name); ``llm_int8`` imports it only when quantizing.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized.modules.linear import LinearPackedParams


class RowwiseInt8Linear(nn.Module):
    """y = W x + b with int8 ``W`` and each row of ``x`` quantized on its own scale.

    Row r is divided by its largest magnitude s_r, so it lies in [-1, 1]; one fixed anchor row
    holding -1 and 1 pins the tensor-wide range the int8 kernel measures; the product is scaled
    back: W x = s_r * (W (x / s_r)). The kernel's activation scale is then the same for every
    batch, so each row's result is independent of the rows beside it. Scaling alone, without a
    per-row shift, is as close to fp32 and faster (docs/benchmarks.md, "int8 activations",
    ``bench/int8_bench.py``).
    """

    def __init__(self, dynamic_linear: nn.Module) -> None:
        super().__init__()
        weight, bias = dynamic_linear._packed_params._weight_bias()
        self.in_features, self.out_features = dynamic_linear.in_features, dynamic_linear.out_features
        self._packed_params = LinearPackedParams(dtype=torch.qint8)
        self._packed_params.set_weight_bias(weight, None)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        anchor = torch.zeros(self.in_features)
        anchor[0], anchor[-1] = -1.0, 1.0
        self.register_buffer("anchor", anchor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        scale = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True)
        scale.clamp_min_(torch.finfo(rows.dtype).tiny)  # an all-zero row stays zero
        unit = rows.new_empty(rows.shape[0] + 1, self.in_features)  # the scaled rows, then the anchor
        torch.div(rows, scale, out=unit[:-1])
        unit[-1] = self.anchor
        product = torch.ops.quantized.linear_dynamic(unit, self._packed_params._packed_params, True)[:-1]
        out = product.mul_(scale) if self.bias is None else torch.addcmul(self.bias, product, scale)
        return out.reshape(*shape[:-1], self.out_features)

    def __repr__(self) -> str:
        return (
            f"RowwiseInt8Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None})"
        )
