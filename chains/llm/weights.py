"""Reading a model's weights, for inference (``chat_model``), training (``finetune.train``) and
conversion (``convert``) alike: an HF folder or a GGUF file, dequantized to dense weights.

Loading a GGUF dequantizes it, yet transformers still marks the model as quantized by "gguf";
``save_pretrained`` then refuses it ("not serializable") and peft treats it as a quantized base.
:func:`load_dense_model` drops those marks, here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def dtype_for(device: str) -> Any:
    """bf16 on CUDA (half the memory, same speed), fp32 elsewhere (CPU kernels want it)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_tokenizer(load_dir: Path, gguf_file: str | None = None) -> Any:
    from transformers import AutoTokenizer

    _quiet()
    return AutoTokenizer.from_pretrained(load_dir, **({"gguf_file": gguf_file} if gguf_file else {}))


def load_dense_model(load_dir: Path, *, gguf_file: str | None = None, dtype: Any = None) -> Any:
    """The causal LM in ``load_dir`` (or its ``gguf_file``) with plain dense weights of ``dtype``."""
    from transformers import AutoModelForCausalLM

    _quiet()
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(load_dir, dtype=dtype, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:  # loaded from a GGUF: the weights are dense now
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model
