"""Which engine generates, and the chat model it gives: the one place that loads a chat model by
name for the agent, the CLI and ``ragcoder serve``.

- ``torch``: transformers with the project's int8 on CPU (bf16 on CUDA), LoRA merged on load
  (:mod:`ragcoder.chains.llm.chat_model`). It trains, it reads any HF folder or GGUF, and it is
  the fallback.
- ``ort``: ONNX Runtime, int4 weights (:mod:`ragcoder.chains.llm.ort_chat`): faster and smaller on
  a CPU (docs/benchmarks.md); needs the model in ONNX form, which ``ragcoder models install``
  makes once (``--adapter`` for a fine-tuned one).
- ``auto`` (the default): ``ort`` when that form is there for the model and adapter asked for,
  ``torch`` otherwise (and always on CUDA).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from ragcoder.chains.llm.models import DEFAULT_MODEL, KNOWN_MODELS, model_dir, read_manifest

from ragcoder.errors import ModelNotInstalled, UnknownEngine

ENGINES = ("auto", "torch", "ort")
ORT_DIR = "ort-int4"  # the ONNX form inside an installed model's folder
ADAPTERS_DIR = "adapters"  # merged and converted adapters: adapters/<adapter id>/ort-int4
ONNX_CONFIG = "genai_config.json"


def check_engine(engine: str) -> str:
    """``engine`` if ragcoder has it; :class:`UnknownEngine` listing the known ones otherwise."""
    name = str(engine).strip().lower()
    if name not in ENGINES:
        raise UnknownEngine(
            f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}",
            hint="pass --engine auto (ONNX Runtime when the model has it, else torch)",
        )
    return name


def adapter_id(adapter: str | Path) -> str:
    """A short id of a LoRA adapter's content (its config and weights), naming its converted form."""
    digest = hashlib.sha256()
    folder = Path(adapter).expanduser()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def is_onnx_folder(path: Path) -> bool:
    return (path / ONNX_CONFIG).is_file()


def sizes_match(folder: Path, record: dict[str, Any] | None) -> bool:
    """Are all of ``record``'s files in ``folder`` with their recorded sizes? (A cheap check at
    load; ``ragcoder models install`` also compares hashes.)"""
    files = (record or {}).get("files") or {}
    return (
        bool(files)
        and is_onnx_folder(folder)
        and all(
            (folder / name).is_file() and (folder / name).stat().st_size == want["size"]
            for name, want in files.items()
        )
    )


def onnx_folder(spec: str | Path, adapter: str | Path | None = None) -> Path | None:
    """Where the ONNX form of ``spec`` (+ ``adapter``) is, when it has been made; else None.

    A spec may itself be an ONNX folder (one with ``genai_config.json``). For a known model the
    form counts only when its manifest records it and its files have the recorded sizes (so a
    half-written or cut conversion never loads).
    """
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_dir() and is_onnx_folder(path):
        return None if adapter else path.resolve()
    if text not in KNOWN_MODELS or (manifest := read_manifest(text)) is None:
        return None
    if adapter:
        record = manifest.get("adapters", {}).get(adapter_id(adapter), {}).get("ort")
        folder = model_dir(text) / ADAPTERS_DIR / adapter_id(adapter) / ORT_DIR
    else:
        record = manifest.get("engines", {}).get("ort")
        folder = model_dir(text) / ORT_DIR
    return folder if sizes_match(folder, record) else None


def ort_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_engine(
    spec: str | Path, engine: str = "auto", adapter: str | Path | None = None, device: str = "auto"
) -> tuple[str, Path | None]:
    """The engine that will run ``spec`` and, for ``ort``, its ONNX folder."""
    engine = check_engine(engine)
    if engine == "torch" or (engine == "auto" and device not in ("auto", "cpu")):
        return "torch", None
    folder = onnx_folder(spec, adapter) if ort_available() else None
    if folder is not None:
        return "ort", folder
    if engine == "auto":
        return "torch", None
    name = str(spec)
    hint = (
        f"run `ragcoder models install {name}`" if name in KNOWN_MODELS else "pass an installed known model"
    )
    if adapter:
        hint += f" --adapter {adapter}"
    if not ort_available():
        hint = "pip install onnxruntime"
    raise ModelNotInstalled(
        f"{name}{' + adapter' if adapter else ''} has no ONNX Runtime form here", hint=hint
    )


def load_chat(
    spec: str | Path = DEFAULT_MODEL,
    *,
    engine: str = "auto",
    adapter: str | Path | None = None,
    quantize: str = "auto",
    max_new_tokens: int = 512,
    device: str = "auto",
    batch_size: int = 8,
) -> Any:
    """The chat model for ``spec`` on the chosen engine (loaded once per process; see
    :func:`choose_engine`). ``quantize`` and ``device`` only concern the torch engine."""
    chosen, folder = choose_engine(spec, engine, adapter, device)
    if chosen == "ort":
        from ragcoder.chains.llm.ort_chat import load_ort_chat_model

        name = str(spec) if str(spec) in KNOWN_MODELS else Path(str(spec)).name
        return load_ort_chat_model(
            folder, model_id=name, max_new_tokens=max_new_tokens, batch_size=batch_size
        )  # type: ignore[arg-type]
    from ragcoder.chains.llm.chat_model import load_chat_model

    return load_chat_model(
        spec,
        adapter=adapter,
        quantize=quantize,
        max_new_tokens=max_new_tokens,  # type: ignore[arg-type]
        device=device,
        batch_size=batch_size,
    )
