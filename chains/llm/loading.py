"""The torch engine's weights, loaded for inference: int8 on CPU (from the on-disk int8 file of an
installed model when there is one), bf16 on CUDA, fp32 when asked, a LoRA adapter merged on load.

:func:`ragcoder.chains.llm.chat_model.load_model_weights` calls :func:`load_weights` once per
process and shares the result. The int8 file is :mod:`ragcoder.chains.llm.int8_cache`; an
installed model whose HF weights were dropped gets them back from its GGUF when it must quantize
again (another torch or transformers version) and drops them again after
(:mod:`ragcoder.chains.llm.installed_parts`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from ragcoder.chains.llm.int8 import quantize_int8
from ragcoder.chains.llm.int8_cache import (
    cache_files_to_read,
    int8_cache_file,
    read_int8_cache,
    write_int8_cache,
)
from ragcoder.chains.llm.models import ResolvedModel, known_model
from ragcoder.chains.llm.weights import dtype_for, load_dense_model, load_tokenizer, restore_hf_weights

Quantize = Literal["auto", "int8", "none"]
# "auto" quantizes on CPU only from this size up: small models lose their answers in int8 and are
# fast enough in fp32; large ones gain several times the speed (docs/benchmarks.md, int8).
INT8_MIN_PARAMS = 500_000_000


@dataclass
class LoadedModel:
    """Weights loaded once per process, shared by every chat model built on them."""

    model: Any
    tokenizer: Any
    resolved: ResolvedModel
    device: str
    description: str
    """e.g. ``"int8-dynamic cpu"``, ``"bf16 cuda"``."""
    load_s: float
    quantize_s: float
    pipeline: Any = None


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def read_cached_int8(cache_file: Any) -> Any | None:
    """The int8 model from ``cache_file`` or an older format's file for the same versions."""
    for path in cache_files_to_read(cache_file):
        if (model := read_int8_cache(path)) is not None:
            return model
    return None


def load_weights(
    resolved: ResolvedModel, adapter: str | None, quantize: Quantize, device: str
) -> LoadedModel:
    import torch

    use_int8 = quantize == "int8" or (quantize == "auto" and device == "cpu")
    if use_int8 and device != "cpu":
        raise ValueError(f"int8 dynamic quantization runs on CPU only, not on {device}; use quantize='none'")
    dtype = dtype_for(device)
    precision = "int8-dynamic" if use_int8 else ("bf16" if dtype == torch.bfloat16 else "fp32")
    cache_file = int8_cache_file(resolved, adapter) if use_int8 else None

    started = time.perf_counter()
    tokenizer = load_tokenizer(resolved.load_dir, resolved.gguf_file)
    model = read_cached_int8(cache_file) if cache_file else None
    if model is not None:
        prepare_generation(model, tokenizer)
        load_s = time.perf_counter() - started
        return LoadedModel(model, tokenizer, resolved, device, f"{precision} {device} (cached)", load_s, 0.0)

    restored = False
    if resolved.kind == "known" and not resolved.gguf_file:  # its HF weights may have been dropped
        restored = restore_hf_weights(resolved.load_dir)
    model = load_dense_model(resolved.load_dir, gguf_file=resolved.gguf_file, dtype=dtype)
    if adapter:
        from peft import PeftModel

        with warnings.catch_warnings():  # peft 0.21 calls an alias transformers 5 deprecates
            warnings.filterwarnings(
                "ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning
            )
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(device)
    model.eval()
    load_s = time.perf_counter() - started
    if quantize == "auto" and use_int8 and sum(p.numel() for p in model.parameters()) < INT8_MIN_PARAMS:
        use_int8, precision = False, "fp32"  # small models lose too much to int8 and are fast in fp32

    started = time.perf_counter()
    if use_int8:
        model = quantize_int8(model)
        if cache_file:
            _keep_int8(model, cache_file, resolved, drop_weights=restored)
    quantize_s = time.perf_counter() - started

    prepare_generation(model, tokenizer)
    return LoadedModel(model, tokenizer, resolved, device, f"{precision} {device}", load_s, quantize_s)


def _keep_int8(model: Any, cache_file: Any, resolved: ResolvedModel, *, drop_weights: bool) -> None:
    """Write the int8 file and record it; drop HF weights rebuilt only for it (the default's)."""
    from ragcoder.chains.llm.installed_parts import drop_hf_weights, record_int8

    record = write_int8_cache(model, cache_file)
    if record is None:
        return
    record_int8(cache_file.parent, cache_file, record)
    if drop_weights and not known_model(resolved.name).keep_hf:
        drop_hf_weights(resolved.load_dir)


def prepare_generation(model: Any, tokenizer: Any) -> None:
    """Greedy by default, a pad token for batching, left padding for decoder-only batches."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    config = model.generation_config
    config.do_sample = False
    config.temperature = None
    config.top_p = None
    config.top_k = None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
