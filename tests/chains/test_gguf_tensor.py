"""A GGUF tensor dequantized slab by slab into one torch tensor: bit for bit gguf-py's ``dequantize``
(rounded through fp16 as the int8 file's recipe does), on synthetic tensors of each type it handles,
on the test fixture's embedding and (slow) on the installed SmolLM2's real GGUF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ragcoder.chains.llm import gguf_tensor
from ragcoder.chains.llm.gguf_tensor import read_dequantized
from ragcoder.chains.llm.int8_cache import find_embedding

from tests.chains.test_gguf_blocks import random_blocks
from tests.chains.test_int8_cache import write_gguf_embedding

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def gguf_py(path: Path, where: dict, rounding: str = "float32"):
    """What the int8 file's rebuild computed before: gguf-py's whole-tensor ``dequantize``."""
    import torch

    stored = np.float32 if where["type"] == Q.F32 else np.uint8
    if where["type"] == Q.F16:
        stored = np.float16
    data = np.memmap(path, dtype=stored, mode="r", offset=where["offset"], shape=tuple(where["shape"]))
    weight = torch.from_numpy(np.copy(gguf.dequantize(data, Q(where["type"]))))
    return weight.to(getattr(torch, rounding)).to(torch.float32)


def write_tensor(path: Path, data: np.ndarray, qtype) -> dict:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", data, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    where = find_embedding(path)
    assert where is not None and where["type"] == qtype
    return where


def synthetic(qtype, rows: int, cols: int) -> np.ndarray:
    rng = np.random.default_rng(int(qtype))
    if qtype in (Q.Q4_K, Q.Q6_K):
        return random_blocks(rng, int(qtype), rows, cols)
    values = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)
    values[0, :3] = [0.0, -0.0, 1e-8]  # signed zeros and an fp16 subnormal
    if qtype == Q.F32:
        values[0, 3] = 70000.0  # beyond fp16: rounds to inf
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(values, qtype)


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q8_0, Q.F32, Q.F16, Q.Q6_K, Q.Q5_0])
@pytest.mark.parametrize("rounding", ["float32", "float16", "bfloat16"])
def test_slabs_equal_gguf_py_bit_for_bit(
    qtype, rounding: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    rows, cols = 37, 512
    where = write_tensor(tmp_path / "t.gguf", synthetic(qtype, rows, cols), qtype)
    want = gguf_py(tmp_path / "t.gguf", where, rounding)
    assert want.shape == (rows, cols)
    for slab_values in (1 << 22, 5 * cols):  # one slab; seven slabs, the last one shorter
        monkeypatch.setattr(gguf_tensor, "SLAB_VALUES", slab_values)
        got = read_dequantized(tmp_path / "t.gguf", where["offset"], where["shape"], where["type"], rounding)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # bit for bit, -0.0 too


def test_a_truncated_gguf_is_an_error(tmp_path: Path) -> None:
    where = write_tensor(tmp_path / "t.gguf", synthetic(Q.Q8_0, 8, 64), Q.Q8_0)
    data = (tmp_path / "t.gguf").read_bytes()
    (tmp_path / "t.gguf").write_bytes(data[: where["offset"] + 100])
    with pytest.raises(ValueError, match="ends inside the tensor"):
        read_dequantized(tmp_path / "t.gguf", where["offset"], where["shape"], where["type"])


def test_the_fixture_models_embedding_equals_gguf_py(model_tiny_dir: Path, tmp_path: Path) -> None:
    import torch
    from ragcoder.chains.llm.weights import load_dense_model

    weight = load_dense_model(model_tiny_dir, dtype=torch.float32).get_input_embeddings().weight
    write_gguf_embedding(tmp_path / "model.gguf", weight.detach())
    where = find_embedding(tmp_path / "model.gguf")
    for rounding in ("float32", "float16"):
        got = read_dequantized(
            tmp_path / "model.gguf", where["offset"], where["shape"], where["type"], rounding
        )
        assert torch.equal(got, gguf_py(tmp_path / "model.gguf", where, rounding))


@pytest.mark.slow
def test_the_installed_smollm2_embedding_equals_gguf_py(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from ragcoder.chains.llm.convert import install_model

    monkeypatch.delenv("RAGCODER_CACHE_DIR", raising=False)
    path = install_model("smollm2-135m-instruct").path / "model.gguf"  # a no-op once installed
    where = find_embedding(path)
    got = read_dequantized(path, where["offset"], where["shape"], where["type"], "float16")
    assert got.shape == (49152, 576)
    assert torch.equal(got.view(torch.int32), gguf_py(path, where, "float16").view(torch.int32))
