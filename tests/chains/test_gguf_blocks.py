"""GGUF Q4_K / Q6_K blocks mapped onto ONNX Runtime's MatMulNBits without re-rounding (synthetic blocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ragcoder.chains.llm.gguf_blocks import (
    Q4_K_BYTES,
    Q4_K_TYPE,
    Q6_K_BYTES,
    Q6_K_TYPE,
    nbits_weight,
    q4k_parts,
    q6k_parts,
    stack_rows,
)

gguf = pytest.importorskip("gguf")


def random_blocks(rng: np.random.Generator, ggml_type: int, rows: int, cols: int) -> np.ndarray:
    """Random k-quant bytes with finite fp16 super-block scales (``rows x cols`` weights)."""
    size = Q4_K_BYTES if ggml_type == Q4_K_TYPE else Q6_K_BYTES
    blocks = rng.integers(0, 256, (rows * cols // 256, size), dtype=np.uint8)
    d = rng.uniform(1e-4, 5e-3, (blocks.shape[0], 2)).astype(np.float16)
    if ggml_type == Q4_K_TYPE:
        blocks[:, 0:4] = d.view(np.uint8)  # d and dmin
        blocks[0, 4:16] = 0  # one super-block with every scale and minimum 0
        blocks[1, 4:8] &= 0xC0  # one with scales 0 but minimums kept: w = -dmin*m, q ignored
    else:
        blocks[:, 208:210] = d[:, :1].view(np.uint8)
    return blocks.reshape(rows, -1)


def gguf_dequantized(raw: np.ndarray, ggml_type: int, rows: int) -> np.ndarray:
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(ggml_type)).reshape(rows, -1)


@pytest.mark.parametrize("ggml_type", [Q4_K_TYPE, Q6_K_TYPE])
def test_nbits_weight_reproduces_gguf_dequantization_exactly(ggml_type: int) -> None:
    rng = np.random.default_rng(ggml_type)
    raw = random_blocks(rng, ggml_type, 8, 512)
    w = nbits_weight(raw, ggml_type, 8, 512)
    np.testing.assert_array_equal(w.dequantize(), gguf_dequantized(raw, ggml_type, 8))
    assert (w.bits, w.block_size) == ((4, 32) if ggml_type == Q4_K_TYPE else (8, 16))
    assert w.packed.dtype == np.uint8 and w.packed.shape == (
        8,
        512 // w.block_size,
        w.block_size * w.bits // 8,
    )


def test_q4k_parts_hold_the_blocks_integers() -> None:
    raw = random_blocks(np.random.default_rng(1), Q4_K_TYPE, 2, 256)
    q, scale, minimum = q4k_parts(raw, 2, 256)
    assert q.min() >= 0 and q.max() <= 15 and scale.shape == minimum.shape == (2, 8)
    d = raw[:, 0:2].copy().view(np.float16).astype(np.float32)
    assert np.all(scale[0] == 0) and np.all(minimum[0] == 0)  # the zeroed super-block
    # every scale is d times a 6-bit integer
    assert np.array_equal(scale / d, np.round(scale / d)) and (scale / d).max() <= 63
    ref = gguf_dequantized(raw, Q4_K_TYPE, 2).reshape(2, 8, 32)
    np.testing.assert_array_equal(scale[..., None] * q.reshape(2, 8, 32) - minimum[..., None], ref)


def test_q6k_parts_are_signed_six_bit() -> None:
    raw = random_blocks(np.random.default_rng(2), Q6_K_TYPE, 3, 256)
    q, scale = q6k_parts(raw, 3, 256)
    assert q.min() >= -32 and q.max() <= 31 and scale.shape == (3, 16)
    np.testing.assert_array_equal(
        (scale[..., None] * q.reshape(3, 16, 16)).reshape(3, 256), gguf_dequantized(raw, Q6_K_TYPE, 3)
    )


def test_other_types_and_ragged_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="neither Q4_K"):
        nbits_weight(np.zeros((1, 34), np.uint8), 8, 1, 32)  # Q8_0
    with pytest.raises(ValueError, match="whole blocks of 256"):
        nbits_weight(np.zeros((1, 144), np.uint8), Q4_K_TYPE, 1, 200)
    rng = np.random.default_rng(3)
    four = nbits_weight(random_blocks(rng, Q4_K_TYPE, 2, 256), Q4_K_TYPE, 2, 256)
    six = nbits_weight(random_blocks(rng, Q6_K_TYPE, 2, 256), Q6_K_TYPE, 2, 256)
    with pytest.raises(ValueError, match="one bit width"):
        stack_rows([four, six])


# --- the graph: MatMulNBits nodes (run by ONNX Runtime) compute with the GGUF's weights ---

K = 512
LAYOUT = {
    "attn_q": (Q4_K_TYPE, 64),
    "attn_k": (Q4_K_TYPE, 32),
    "attn_v": (Q6_K_TYPE, 32),
    "output": (Q4_K_TYPE, 48),
}


def write_gguf(path: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A GGUF with q, k (Q4_K), v (Q6_K) of layer 0 and a Q4_K output; returns their float weights."""
    writer = gguf.GGUFWriter(str(path), "qwen2")
    weights = {}
    for part, (ggml_type, rows) in LAYOUT.items():
        name = "output.weight" if part == "output" else f"blk.0.{part}.weight"
        raw = random_blocks(rng, ggml_type, rows, K)
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType(ggml_type))
        weights[name] = gguf_dequantized(raw, ggml_type, rows)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def write_builder_like_folder(folder: Path, rng: np.random.Generator) -> np.ndarray:
    """A two-matmul graph named as the ONNX Runtime GenAI builder names Qwen's (int4 symmetric);
    returns the bias added after the fused qkv matmul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    for weight, n, a, y in [
        ("model.layers.0.attn.qkv_proj", 128, "hidden", "qkv"),
        ("lm_head", 48, "hidden", "logits"),
    ]:
        inits += [
            numpy_helper.from_array(
                rng.integers(0, 256, (n, K // 32, 16), dtype=np.uint8), f"{weight}.MatMul.weight_Q4"
            ),
            numpy_helper.from_array(rng.random((n, K // 32), np.float32), f"{weight}.MatMul.weight_scales"),
        ]
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [a, f"{weight}.MatMul.weight_Q4", f"{weight}.MatMul.weight_scales"],
                [y],
                name=f"/{weight}/MatMul_Q4",
                domain="com.microsoft",
                K=K,
                N=n,
                bits=4,
                block_size=32,
                accuracy_level=0,
            )
        )
    bias = rng.random(128, np.float32)
    inits.append(numpy_helper.from_array(bias, "qkv.bias"))
    nodes.append(helper.make_node("Add", ["qkv", "qkv.bias"], ["qkv_out"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", K])],
        [
            helper.make_tensor_value_info("qkv_out", TensorProto.FLOAT, ["batch", "seq", 128]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", 48]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    folder.mkdir()
    onnx.save(
        model,
        str(folder / "model.onnx"),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    (folder / "genai_config.json").write_text("{}")
    return bias


def test_rewritten_graph_computes_with_the_gguf_weights(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from ragcoder.chains.llm.onnx_gguf import write_gguf_weights

    rng = np.random.default_rng(4)
    weights = write_gguf(tmp_path / "m.gguf", rng)
    bias = write_builder_like_folder(tmp_path / "built", rng)
    report = write_gguf_weights(tmp_path / "built", tmp_path / "m.gguf", tmp_path / "exact")

    assert report.matmuls == 2 and report.split == 1  # qkv: q, k 4-bit then v 8-bit
    assert report.layouts == {"4-bit/32": 3, "8-bit/16": 1} and report.max_abs_diff == 0.0
    assert (tmp_path / "exact" / "genai_config.json").is_file()
    session = ort.InferenceSession(str(tmp_path / "exact" / "model.onnx"), providers=["CPUExecutionProvider"])
    hidden = rng.standard_normal((2, 3, K)).astype(np.float32)
    qkv, logits = session.run(["qkv_out", "logits"], {"hidden": hidden})
    w_qkv = np.concatenate([weights[f"blk.0.{p}.weight"] for p in ("attn_q", "attn_k", "attn_v")])
    expected_logits = hidden.astype(np.float64) @ weights["output.weight"].T
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-5 * np.abs(expected_logits).max())
    expected = hidden.astype(np.float64) @ w_qkv.T + bias
    np.testing.assert_allclose(qkv, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_rewrite_refuses_an_existing_folder_and_unknown_weights(tmp_path: Path) -> None:
    from ragcoder.chains.llm.onnx_gguf import gguf_names, write_gguf_weights

    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        write_gguf_weights(tmp_path, tmp_path / "m.gguf", tmp_path / "out")
    with pytest.raises(ValueError, match="no GGUF tensor"):
        gguf_names("model.layers.0.mlp.experts.MatMul.weight_Q4", set())
    assert gguf_names("model.layers.3.mlp.down_proj.MatMul.weight_Q4", set()) == ["blk.3.ffn_down.weight"]
    assert gguf_names("lm_head.MatMul.weight_Q4", {"token_embd.weight"}) == ["token_embd.weight"]


def test_rewrite_refuses_an_architecture_whose_rows_are_reordered(tmp_path: Path) -> None:
    from ragcoder.chains.llm.onnx_gguf import write_gguf_weights

    writer = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")  # q/k rows permuted for rotary
    writer.add_tensor("output.weight", np.zeros((1, 144), np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="'llama' is not one whose rows map"):
        write_gguf_weights(tmp_path, tmp_path / "llama.gguf", tmp_path / "out")
