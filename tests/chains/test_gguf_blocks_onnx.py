"""The install's ONNX conversion with ``gguf_blocks``: the real builder, then the GGUF's own blocks.

A tiny random Qwen2 whose matmuls come from random Q4_K / Q6_K blocks (a GGUF written here; the HF
folder holds their dequantized values, as the install's GGUF -> HF conversion makes it). Its ONNX
form with the GGUF's blocks must follow the fp32 model far more closely than the builder's int4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ragcoder.chains.llm.gguf_blocks import Q4_K_TYPE, Q6_K_TYPE
from ragcoder.chains.llm.models import KNOWN_MODELS, KnownModel, model_dir

from tests.chains.test_gguf_blocks import gguf_dequantized, random_blocks
from tests.engine_helpers import build_onnx_folder

gguf = pytest.importorskip("gguf")
pytest.importorskip("onnxruntime_genai")
pytestmark = pytest.mark.slow

HIDDEN, FFN, LAYERS = 256, 512, 2
# (HF name, GGUF name, GGML type): layer 0's v and layer 1's down are Q6_K, as in Q4_K_M files
MATRICES = [
    (f"model.layers.{i}.{hf}.weight", f"blk.{i}.{gg}.weight", Q6_K_TYPE if (i, gg) in q6 else Q4_K_TYPE)
    for q6 in [{(0, "attn_v"), (1, "ffn_down")}]
    for i in range(LAYERS)
    for hf, gg in [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ]
] + [("lm_head.weight", "output.weight", Q6_K_TYPE)]


def make_tiny_qwen_with_gguf(hf_dir: Path, gguf_path: Path) -> None:
    """The HF folder and its GGUF: every matmul's weights are the GGUF blocks' values."""
    import torch
    from ragcoder.chains.llm.convert import smollm2_tokenizer_dir
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    state = model.state_dict()
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(gguf_path), "qwen2")
    for hf_name, gguf_name, ggml_type in MATRICES:
        rows, cols = state[hf_name].shape
        raw = random_blocks(rng, ggml_type, rows, cols)
        writer.add_tensor(gguf_name, raw, raw_dtype=gguf.GGMLQuantizationType(ggml_type))
        state[hf_name] = torch.from_numpy(gguf_dequantized(raw, ggml_type, rows))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    model.load_state_dict(state)
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)


def logits_of(folder: Path, ids: list[int]) -> np.ndarray:
    from ragcoder.chains.llm.onnx_decoder import OnnxDecoder

    decoder = OnnxDecoder(folder)
    kv = decoder.new_rows(1, len(ids))
    return decoder.step(kv, np.array([ids], dtype=np.int64))[0].astype(np.float64)


def test_onnx_form_from_gguf_blocks_follows_the_fp32_model(
    model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch
    from ragcoder.chains.llm.onnx_convert import ensure_onnx
    from transformers import AutoModelForCausalLM

    name = "tiny-gguf-blocks-test"
    known = KnownModel(
        name=name,
        description="tiny",
        requirements=(),
        gguf_members=(),
        gguf_size=0,
        gguf_sha256="",
        onnx_precision="int4",
        keep_hf=True,
    )
    monkeypatch.setitem(KNOWN_MODELS, name, known)
    folder = model_dir(name)
    folder.mkdir(parents=True)
    make_tiny_qwen_with_gguf(folder / "hf", folder / "model.gguf")
    (folder / "installed.json").write_text(json.dumps({"name": name}))

    lines: list[str] = []
    manifest = ensure_onnx(name, say=lines.append, gguf_blocks=True)
    record = manifest["engines"]["ort"]
    assert record["weights"] == "gguf-blocks" and record["max_abs_diff"] < 1e-6  # fp32 rounding only
    assert record["matmuls"] == 2 * 5 + 1 and record["split"] == 1  # layer 0's qkv: q, k | v
    assert record["layouts"] == {"4-bit/32": 12, "8-bit/16": 3}
    assert ensure_onnx(name, say=lines.append, gguf_blocks=True)["engines"]["ort"] == record
    assert lines[-1].startswith("ONNX form checked")

    ids = list(range(100, 164))
    model = AutoModelForCausalLM.from_pretrained(folder / "hf", dtype=torch.float32)
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0].double().numpy()
    exact = logits_of(folder / "ort-int4", ids)
    builder = logits_of(build_onnx_folder(folder / "hf", tmp_path / "builder-int4", "int4"), ids)
    error_exact = np.abs(exact - reference).mean()
    error_builder = np.abs(builder - reference).mean()
    assert error_exact < error_builder / 3, (error_exact, error_builder)
