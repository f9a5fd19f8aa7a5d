"""Helpers for the engine and serve tests: a tiny random model the ONNX builder accepts, converted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def make_tiny_onnx_source(out: Path, *, seed: int = 0) -> Path:
    """A 2-layer random llama (hidden 64, head size 16: the ONNX attention operator needs a head
    size that is a multiple of 16) with the SmolLM2 tokenizer, as an HF folder."""
    import torch
    from ragcoder.chains.llm.convert import smollm2_tokenizer_dir
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.to(torch.float16).to(torch.float32)  # fp16 values, as the installed models' weights are
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_onnx_folder(hf_dir: Path, out: Path, precision: str = "fp32") -> Path:
    """The ONNX Runtime GenAI builder on ``hf_dir`` (about 15 s for the tiny model)."""
    cmd = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(hf_dir),
        "-o",
        str(out),
        "-p",
        precision,
        "-e",
        "cpu",
        "-c",
        str(out.parent / "builder-cache"),
    ]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out
