"""Reading a model's weights, for inference (``chat_model``), training (``finetune.train``) and
conversion (``convert``) alike: an HF folder or a GGUF file, dequantized to dense weights; and
:func:`convert_gguf_to_hf`, the one GGUF -> HF folder conversion (install and rebuilds alike), and
:func:`restore_hf_weights`, which rebuilds an installed model's dropped HF weights with it.

Loading a GGUF dequantizes it, yet transformers still marks the model as quantized by "gguf";
``save_pretrained`` then refuses it ("not serializable") and peft treats it as a quantized base.
:func:`load_dense_model` drops those marks, here and nowhere else.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragcoder.chains.llm.models import GGUF_NAME, HF_SUBDIR, model_lock, read_manifest, write_manifest

from ragcoder.errors import ModelNotInstalled

Progress = Callable[[str], None]
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
_CHUNK = 8 << 20


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
    """The causal LM in ``load_dir`` (or its ``gguf_file``) with plain dense weights of ``dtype``.
    An installed model's dropped HF weights are rebuilt from its GGUF first (one line on stderr)."""
    from transformers import AutoModelForCausalLM

    if gguf_file is None:
        restore_hf_weights(Path(load_dir))

    _quiet()
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(load_dir, dtype=dtype, **kwargs)
    if getattr(model, "hf_quantizer", None) is not None:  # loaded from a GGUF: the weights are dense now
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, *, save_fp16: bool = True) -> str:
    """Dequantize a GGUF into a Hugging Face folder that reloads in seconds; returns the saved dtype.

    The weights are read by :func:`ragcoder.chains.llm.weights.load_dense_model` (which drops the
    quantizer marks ``save_pretrained`` would refuse). Weights are saved as fp16 (half the disk of fp32,
    and loaded back as fp32 on CPU); if any weight does not fit fp16's range they stay fp32.
    """
    import torch

    tokenizer = load_tokenizer(gguf_path.parent, gguf_path.name)
    model = load_dense_model(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    dtype = "float32"
    if save_fp16:
        fp16_max = torch.finfo(torch.float16).max
        if all(p.abs().max().item() < fp16_max for p in model.parameters()):
            model = model.to(torch.float16)
            dtype = "float16"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    return dtype


# --- an installed model's HF weights, dropped and rebuilt (chains/llm/installed_parts.py) ---


def notice(line: str) -> None:
    print(f"ragcoder: {line}", file=sys.stderr, flush=True)


def hf_weight_files(hf_dir: Path) -> list[Path]:
    return sorted({p for pattern in WEIGHT_PATTERNS for p in hf_dir.glob(pattern) if p.is_file()})


def has_hf_weights(hf_dir: Path) -> bool:
    return (hf_dir / "config.json").is_file() and bool(hf_weight_files(hf_dir))


def is_installed_hf_dir(hf_dir: Path) -> bool:
    """Is ``hf_dir`` the ``hf/`` folder of an installed known model (whose weights may be dropped)?"""
    return (
        hf_dir.name == HF_SUBDIR
        and (hf_dir.parent / GGUF_NAME).is_file()
        and (hf_dir / "config.json").is_file()
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_record(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def hf_record(hf_dir: Path) -> dict[str, Any]:
    files = {p.name: _file_record(p) for p in sorted(hf_dir.iterdir()) if p.is_file()}
    return {"size": sum(f["size"] for f in files.values()), "files": files}


def restore_weights_unlocked(folder: Path, manifest: dict[str, Any], say: Progress) -> bool:
    """Rebuild ``folder``'s dropped HF weights from its GGUF (updating ``manifest``); True when it did."""
    hf_dir = folder / HF_SUBDIR
    if has_hf_weights(hf_dir):
        return False
    if not (folder / GGUF_NAME).is_file():
        raise ModelNotInstalled(f"{folder.name} has neither its GGUF nor its HF weights", hint="reinstall it")
    say(
        f"rebuilding the HF weights of {folder.name} from its GGUF (once; about a minute for 1.5B; "
        f"`ragcoder models install {folder.name}` drops them again)..."
    )
    hf_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".hf-", dir=folder) as tmp:
        manifest["hf_dtype_on_disk"] = convert_gguf_to_hf(folder / GGUF_NAME, Path(tmp) / HF_SUBDIR)
        for built in Path(tmp, HF_SUBDIR).iterdir():
            if built.is_file() and (
                built in hf_weight_files(built.parent) or not (hf_dir / built.name).exists()
            ):
                os.replace(built, hf_dir / built.name)
    manifest.setdefault("parts", {})[HF_SUBDIR] = hf_record(hf_dir)
    return True


def restore_hf_weights(hf_dir: Path, *, say: Progress = notice) -> bool:
    """Make sure the installed model's ``hf_dir`` holds its weights; True when they were rebuilt."""
    if has_hf_weights(hf_dir) or not is_installed_hf_dir(hf_dir):
        return False
    folder = hf_dir.parent
    with model_lock(folder.name):
        manifest = read_manifest(folder.name) or {}
        restored = restore_weights_unlocked(folder, manifest, say)
        if restored and manifest:
            write_manifest(folder, manifest)
        return restored
