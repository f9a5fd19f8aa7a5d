"""A GGUF k-quant matrix as ONNX Runtime's ``MatMulNBits`` stores it, without re-rounding a weight.

The default model comes as a Q4_K_M GGUF: most matrices are Q4_K (blocks of 32 weights,
``w = d*sc*q - dmin*m`` with ``q`` in 0..15, a 6-bit scale ``sc`` and minimum ``m`` per block,
``d`` and ``dmin`` fp16 per 256), the rest Q6_K (blocks of 16, ``w = d*sc*q``, ``q`` in -32..31,
an 8-bit ``sc``). The builder's int4 re-rounds these values onto its own grid (about 9% relative
RMS error against the GGUF's weights, docs/results.md); here each one is kept as it is:

- Q6_K: ``bits=8``, ``block_size=16``, ``q + 128`` stored (the op's default zero point is 128),
  scale ``d*sc``.
- Q4_K: ``bits=4``, ``block_size=32``, ``q`` stored with scale ``d*sc`` and the default zero point
  8, plus a per-block ``offset = 8*d*sc - dmin*m`` that the graph adds as
  ``blocksum(A) @ offset.T`` (see chains/llm/onnx_gguf.py). Float zero points would say the same in
  one op, but ONNX Runtime 1.32's CPU kernel then dequantizes the whole matrix on every call
  (about 200x slower, docs/results.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QK_K = 256  # weights per super-block
Q4_K_BYTES = 144  # d, dmin (fp16), 12 bytes of 6-bit scales and minimums, 128 bytes of nibbles
Q6_K_BYTES = 210  # 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, d (fp16)
Q4_K_TYPE = 12  # gguf.GGMLQuantizationType values
Q6_K_TYPE = 14


@dataclass(frozen=True)
class NBitsWeight:
    """One ``rows x cols`` matrix in MatMulNBits' layout: ``w = scale * (q - zero) + offset`` per block."""

    bits: int  # 4 or 8
    block_size: int  # weights sharing one scale, along cols (K)
    packed: np.ndarray  # uint8 [rows, cols / block_size, block_size * bits / 8]; 4-bit: even index low nibble
    scales: np.ndarray  # float32 [rows, cols / block_size]
    offsets: np.ndarray | None  # float32 [rows, cols / block_size], added to every weight of its block

    @property
    def rows(self) -> int:
        return self.packed.shape[0]

    @property
    def zero(self) -> int:
        return 1 << (self.bits - 1)  # the op's zero point when none is given

    def dequantize(self) -> np.ndarray:
        """The float32 matrix the op computes with (rows x cols)."""
        if self.bits == 4:
            q = np.stack([self.packed & 0x0F, self.packed >> 4], axis=-1).reshape(*self.scales.shape, -1)
        else:
            q = self.packed
        w = (q.astype(np.float32) - self.zero) * self.scales[..., None]
        if self.offsets is not None:
            w += self.offsets[..., None]
        return w.reshape(self.rows, -1)


def _super_blocks(raw: np.ndarray, rows: int, cols: int, block_bytes: int) -> np.ndarray:
    if cols % QK_K:
        raise ValueError(f"a k-quant row holds whole blocks of {QK_K} weights, not {cols}")
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(rows * (cols // QK_K), block_bytes)
    return blocks


def q4k_parts(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(q uint8 [rows, cols], scale, minimum float32 [rows, cols/32])`` with ``w = scale*q - minimum``."""
    blocks = _super_blocks(raw, rows, cols, Q4_K_BYTES)
    n = blocks.shape[0]
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    packed = blocks[:, 4:16].reshape(n, 3, 4)
    low, high, mixed = packed[:, 0], packed[:, 1], packed[:, 2]
    # 8 scales and 8 minimums of 6 bits: blocks 0-3 in the low 6 bits of bytes 0-3 / 4-7, blocks 4-7
    # split between the nibbles of bytes 8-11 and the top 2 bits of bytes 0-3 / 4-7
    sc = np.concatenate([low & 0x3F, (mixed & 0x0F) | ((low >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([high & 0x3F, (mixed >> 4) | ((high >> 2) & 0x30)], axis=-1)
    scale = d * sc.astype(np.float32)
    minimum = dmin * mn.astype(np.float32)
    # 4 chunks of 32 bytes: the low nibbles are block 2c, the high nibbles block 2c+1
    nibbles = blocks[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    q = (nibbles & 0x0F).reshape(rows, cols)
    return q, scale.reshape(rows, cols // 32), minimum.reshape(rows, cols // 32)


def q6k_parts(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """``(q int8 [rows, cols] in -32..31, scale float32 [rows, cols/16])`` with ``w = scale*q``."""
    blocks = _super_blocks(raw, rows, cols, Q6_K_BYTES)
    n = blocks.shape[0]
    low = blocks[:, :128].reshape(n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    low = (low & 0x0F).reshape(n, 8, 32)
    high = blocks[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    high = (high & 0x03).reshape(n, 8, 32)
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)
    sc = blocks[:, 192:208].copy().view(np.int8).astype(np.float32)
    d = blocks[:, 208:210].copy().view(np.float16).astype(np.float32)
    return q.reshape(rows, cols), (d * sc).reshape(rows, cols // 16)


def pack_nibbles(q: np.ndarray, block_size: int) -> np.ndarray:
    """uint8 values 0..15 ``[rows, cols]`` -> ``[rows, cols/block, block/2]``, even index in the low nibble."""
    rows, cols = q.shape
    q = q.astype(np.uint8).reshape(rows, cols // block_size, block_size)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def nbits_weight(raw: np.ndarray, ggml_type: int, rows: int, cols: int) -> NBitsWeight:
    """The GGUF matrix ``raw`` (its bytes; ``rows`` output channels of ``cols`` inputs) for MatMulNBits."""
    if ggml_type == Q4_K_TYPE:
        q, scale, minimum = q4k_parts(raw, rows, cols)
        offsets = 8 * scale - minimum  # scale * (q - 8) + offsets == scale * q - minimum
        return NBitsWeight(4, 32, pack_nibbles(q, 32), scale, offsets.astype(np.float32))
    if ggml_type == Q6_K_TYPE:
        q, scale = q6k_parts(raw, rows, cols)
        packed = (q.astype(np.int16) + 128).astype(np.uint8).reshape(rows, cols // 16, 16)
        return NBitsWeight(8, 16, packed, scale, None)
    raise ValueError(f"GGML type {ggml_type} is neither Q4_K ({Q4_K_TYPE}) nor Q6_K ({Q6_K_TYPE})")


def stack_rows(parts: list[NBitsWeight]) -> NBitsWeight:
    """Matrices of one layout stacked along rows (the builder fuses q, k and v into one matmul)."""
    first = parts[0]
    if any((p.bits, p.block_size) != (first.bits, first.block_size) for p in parts):
        raise ValueError("only matrices of one bit width and block size stack into one MatMulNBits")
    offsets = None if first.offsets is None else np.concatenate([p.offsets for p in parts])  # type: ignore[misc]
    return NBitsWeight(
        first.bits,
        first.block_size,
        np.concatenate([p.packed for p in parts]),
        np.concatenate([p.scales for p in parts]),
        offsets,
    )
