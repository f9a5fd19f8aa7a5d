"""One GGUF tensor dequantized straight into a preallocated fp32 torch tensor, a slab of rows at a time.

The int8 file rebuilds the token embedding from the GGUF on every load
(:mod:`ragcoder.chains.llm.int8_cache`). gguf-py's ``dequantize`` over the whole tensor keeps every
group's output in a list before joining them into its result (two full-size fp32 buffers), and the
result was then copied and rounded through fp16 (two more). Here the file's bytes are read a slab at
a time into one small buffer and dequantized in place in the output: Q8_0 and Q4_K (the known
models' embeddings) and F32/F16 with torch, using gguf-py's fp32 operations in gguf-py's order, so
the values are the same bit for bit (tests/chains/test_gguf_tensor.py); any other type goes through
gguf-py slab by slab (its blocks never span rows, so a slab is dequantized as the whole would be).
"""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Any

SLAB_VALUES = (
    1 << 22
)  # fp32 values dequantized per step (16 MB): small next to the tensor, big enough to stay fast
Q4_K_SCALES = 12  # bytes of packed 6-bit scales and minimums after d and dmin


def tensor_layout(shape: list[int], ggml_type: int) -> tuple[int, int, int]:
    """``(rows, values per row, bytes per row)`` of a tensor whose data ``GGUFReader`` gives as
    ``shape`` (values for F32/F16, bytes for the quantized types)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    qtype = GGMLQuantizationType(ggml_type)
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    rows = prod(shape[:-1])
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return rows, shape[-1], shape[-1] * block_bytes
    if shape[-1] % block_bytes:
        raise ValueError(f"a {qtype.name} row of {shape[-1]} bytes is not whole blocks of {block_bytes}")
    return rows, shape[-1] // block_bytes * block, shape[-1]


def read_dequantized(
    gguf: Path, offset: int, shape: list[int], ggml_type: int, rounding: str = "float32"
) -> Any:
    """The tensor at byte ``offset`` of ``gguf`` as a ``rows x values`` fp32 torch tensor, each value
    rounded through ``rounding`` (a torch dtype name) and back, as gguf-py's ``dequantize`` gives it."""
    import torch

    rows, width, row_bytes = tensor_layout(shape, ggml_type)
    out = torch.empty(rows, width, dtype=torch.float32)
    slab_rows = max(1, SLAB_VALUES // width)
    raw = torch.empty(min(rows, slab_rows) * row_bytes, dtype=torch.uint8)
    round_to = getattr(torch, rounding)
    with open(gguf, "rb") as file:
        file.seek(offset)
        for start in range(0, rows, slab_rows):
            stop = min(rows, start + slab_rows)
            data = raw[: (stop - start) * row_bytes]
            if file.readinto(data.numpy()) != data.numel():
                raise ValueError(f"{gguf} ends inside the tensor at byte offset {offset}")
            slab = out[start:stop]
            _dequantize_slab(data, ggml_type, slab)
            if round_to != torch.float32:
                slab.copy_(slab.to(round_to))
    return out


def _dequantize_slab(data: Any, ggml_type: int, out: Any) -> None:
    """Dequantize the bytes ``data`` (whole rows) into ``out`` (their fp32 values)."""
    import torch
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, dequantize

    qtype = GGMLQuantizationType(ggml_type)
    if qtype == GGMLQuantizationType.F32:
        out.view(-1).copy_(data.view(torch.float32))
    elif qtype == GGMLQuantizationType.F16:
        out.view(-1).copy_(data.view(torch.float16))
    elif qtype == GGMLQuantizationType.Q8_0:
        _q8_0(data.view(-1, GGML_QUANT_SIZES[qtype][1]), out)
    elif qtype == GGMLQuantizationType.Q4_K:
        _q4_k(data.view(-1, GGML_QUANT_SIZES[qtype][1]), out)
    else:  # gguf-py's own code, on this slab only
        out.copy_(torch.from_numpy(dequantize(data.numpy().reshape(out.shape[0], -1), qtype)))


def _half(blocks: Any, start: int) -> Any:
    """The fp16 field at byte ``start`` of each block, as fp32 ``[blocks, 1]``."""
    import torch

    return blocks[:, start : start + 2].contiguous().view(torch.float16).to(torch.float32)


def _q8_0(blocks: Any, out: Any) -> None:
    """Q8_0: 32 int8 ``x`` after an fp16 ``d``; gguf-py computes ``x * d`` in fp32."""
    import torch

    values = out.view(blocks.shape[0], -1)
    values.copy_(blocks[:, 2:].view(torch.int8))
    values.mul_(_half(blocks, 0))


def _q4_k(blocks: Any, out: Any) -> None:
    """Q4_K: ``(d * sc) * q - (dmin * m)`` per block of 32, in fp32, as gguf-py computes it."""
    import torch

    n = blocks.shape[0]
    packed = blocks[:, 4 : 4 + Q4_K_SCALES].reshape(n, 3, 4)
    low, high, mixed = packed[:, 0], packed[:, 1], packed[:, 2]
    # 8 scales and 8 minimums of 6 bits: blocks 0-3 in the low 6 bits of bytes 0-3 / 4-7, blocks 4-7
    # split between the nibbles of bytes 8-11 and the top 2 bits of bytes 0-3 / 4-7
    sc = torch.cat([low & 0x3F, (mixed & 0x0F) | ((low >> 2) & 0x30)], dim=-1)
    mn = torch.cat([high & 0x3F, (mixed >> 4) | ((high >> 2) & 0x30)], dim=-1)
    scale = (_half(blocks, 0) * sc.to(torch.float32)).unsqueeze(-1)
    minimum = (_half(blocks, 2) * mn.to(torch.float32)).unsqueeze(-1)
    # 4 chunks of 32 bytes: the low nibbles are block 2c, the high nibbles block 2c+1
    nibbles = blocks[:, 4 + Q4_K_SCALES :].reshape(n, 4, 32)
    values = out.view(n, 4, 2, 32)
    values[:, :, 0].copy_(nibbles & 0x0F)
    values[:, :, 1].copy_(nibbles >> 4)
    values = out.view(n, 8, 32)
    values.mul_(scale)
    values.sub_(minimum)
