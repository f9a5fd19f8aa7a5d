"""One weight loader for inference, training and conversion: a GGUF comes back as a dense model
with no quantizer marks (which save_pretrained and peft would trip over), the same way in each."""

from __future__ import annotations

from pathlib import Path

import pytest


def _no_quantizer_marks(model) -> bool:
    return (
        getattr(model, "hf_quantizer", None) is None
        and not getattr(model, "is_quantized", False)
        and not hasattr(model.config, "quantization_config")
    )


def test_an_hf_folder_loads_dense_in_the_dtype_asked(model_tiny_dir: Path) -> None:
    import torch
    from ragcoder.chains.llm.weights import dtype_for, load_dense_model, load_tokenizer

    model = load_dense_model(model_tiny_dir, dtype=dtype_for("cpu"))
    assert next(model.parameters()).dtype == torch.float32 and _no_quantizer_marks(model)
    assert dtype_for("cuda:0") == torch.bfloat16
    assert load_tokenizer(model_tiny_dir).eos_token


@pytest.mark.slow
def test_a_gguf_loads_without_quantizer_marks_for_chat_training_and_conversion(tmp_path: Path) -> None:
    import torch
    from ragcoder.chains.llm.chat_model import clear_model_cache, load_model_weights
    from ragcoder.chains.llm.convert import convert_gguf_to_hf, install_model
    from ragcoder.chains.llm.models import GGUF_NAME
    from ragcoder.finetune.train import load_base

    gguf = install_model("smollm2-135m-instruct").path / GGUF_NAME  # a no-op once installed
    try:
        chat = load_model_weights(str(gguf), quantize="none")
        assert _no_quantizer_marks(chat.model)
    finally:
        clear_model_cache()
    model, tokenizer, _ = load_base(str(gguf), "cpu")
    assert _no_quantizer_marks(model) and tokenizer.pad_token_id is not None
    assert next(model.parameters()).dtype == torch.float32
    del model
    assert convert_gguf_to_hf(gguf, tmp_path / "hf") == "float16"  # save_pretrained accepts it
    assert (tmp_path / "hf" / "config.json").is_file()
