"""The parts an installed model keeps on disk, each recorded in its manifest with size and sha256.

A model that does not keep its HF weights (``KnownModel.keep_hf``, False for the default) keeps
only what the default engine (torch int8) reads: the GGUF (the source), the int8 file
(:mod:`ragcoder.chains.llm.int8_cache`) and ``hf/``'s config, tokenizer and chat template. The
HF weights (3.6 GB of fp16 for Qwen 1.5B) are needed only to build the int8 file, to merge a LoRA
adapter, to train, for fp32/GPU loads and for the ONNX conversion: they are dropped once the int8
file exists and rebuilt from the GGUF, by the install's own conversion (so bit for bit the same),
when a command needs them (one line on stderr; the manifest updated).

Manifest (``installed.json``) → ``parts``: ``{entry name: {"size", "sha256"}}`` for files, and
``{"size", "files": {name: {"size", "sha256"}}}`` for ``hf/``. The int8 file is checked against its
record (size at load, hash on ``ragcoder models install``) and remade when it does not match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragcoder.chains.llm.int8_cache import cache_name, write_int8_cache
from ragcoder.chains.llm.models import (
    GGUF_NAME,
    HF_SUBDIR,
    known_model,
    model_dir,
    model_lock,
    read_manifest,
    write_manifest,
)
from ragcoder.chains.llm.weights import (
    Progress,
    has_hf_weights,
    hf_record,
    hf_weight_files,
    load_dense_model,
    notice,
    restore_weights_unlocked,
    sha256_of,
)

from ragcoder.errors import ModelInstallError, ModelNotInstalled


def _write(folder: Path, manifest: dict[str, Any]) -> None:
    write_manifest(folder, manifest)


def _lock(folder: Path) -> Any:
    return model_lock(folder.name)


def drop_weights_unlocked(folder: Path, manifest: dict[str, Any]) -> int:
    """Remove ``folder``'s HF weights, keeping config, tokenizer and template; the bytes freed."""
    hf_dir = folder / HF_SUBDIR
    freed = 0
    for path in hf_weight_files(hf_dir):
        freed += path.stat().st_size
        path.unlink()
    if hf_dir.is_dir():
        manifest.setdefault("parts", {})[HF_SUBDIR] = hf_record(hf_dir)
    return freed


def drop_hf_weights(hf_dir: Path) -> int:
    """Drop the installed model's HF weights again (after they were rebuilt for the int8 file)."""
    folder = hf_dir.parent
    with _lock(folder):
        manifest = read_manifest(folder.name)
        if manifest is None or not has_hf_weights(hf_dir):
            return 0
        freed = drop_weights_unlocked(folder, manifest)
        _write(folder, manifest)
        return freed


def build_int8_unlocked(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Quantize ``folder``'s HF weights as the torch engine loads them (fp32, eval, int8) and
    write its int8 file; its record goes into ``manifest``."""
    import torch
    from ragcoder.chains.llm.int8 import quantize_int8

    model = load_dense_model(folder / HF_SUBDIR, dtype=torch.float32)
    model.to("cpu")
    model.eval()
    model = quantize_int8(model)
    path = folder / cache_name()
    record = write_int8_cache(model, path)
    del model
    if record is None:
        raise ModelInstallError(f"could not write {path}", hint="check free disk space, then retry")
    record_int8_unlocked(manifest, path.name, record)
    return record


def record_int8_unlocked(manifest: dict[str, Any], name: str, record: dict[str, Any]) -> None:
    parts = manifest.setdefault("parts", {})
    for old in [key for key in parts if key.startswith("int8") and key != name]:
        del parts[old]
    parts[name] = record


def record_int8(folder: Path, path: Path, record: dict[str, Any]) -> None:
    """Record the int8 file a load has just written into the installed model's manifest."""
    with _lock(folder):
        manifest = read_manifest(folder.name)
        if manifest is not None:
            record_int8_unlocked(manifest, path.name, record)
            _write(folder, manifest)


def int8_matches(folder: Path, manifest: dict[str, Any], *, full: bool) -> bool:
    """Is the current int8 file there with its recorded size (and hash when ``full``)?"""
    path = folder / cache_name()
    record = manifest.get("parts", {}).get(path.name)
    if not record or not path.is_file() or path.stat().st_size != record["size"]:
        return False
    return not full or sha256_of(path) == record["sha256"]


def make_default_parts_unlocked(
    folder: Path, manifest: dict[str, Any], say: Progress, *, full: bool, drop_weights: bool = True
) -> None:
    """Check (or make) the int8 file, then drop the HF weights and older int8 files."""
    if int8_matches(folder, manifest, full=full):
        say(f"int8 file checked: {cache_name()}")
    else:
        say("quantizing to int8 for the default engine (about a minute for 1.5B)...")
        restore_weights_unlocked(folder, manifest, say)
        build_int8_unlocked(folder, manifest)
    for stale in folder.glob("int8*.pt"):
        if stale.name != cache_name():
            stale.unlink()
    freed = drop_weights_unlocked(folder, manifest) if drop_weights else 0
    if freed:
        say(f"dropped the HF weights ({freed / 1e9:.2f} GB; rebuilt from the GGUF when a command needs them)")
    if "gguf_sha256" in manifest:  # verified by the install
        manifest.setdefault("parts", {})[GGUF_NAME] = {
            "size": manifest["gguf_size"],
            "sha256": manifest["gguf_sha256"],
        }


def ensure_default_parts(name: str, *, say: Progress = notice, full: bool = True) -> dict[str, Any] | None:
    """For an installed model that does not keep its HF weights: the int8 file checked (remade when
    missing or damaged), the HF weights and older int8 files dropped. An older install's layout
    (full HF folder, v3 int8 file) becomes the current one. Returns the manifest."""
    if known_model(name).keep_hf:
        return read_manifest(name)
    folder = model_dir(name)
    with _lock(folder):
        manifest = read_manifest(name)
        if manifest is None:
            raise ModelNotInstalled(
                f"model {name!r} is not installed", hint=f"run `ragcoder models install {name}`"
            )
        make_default_parts_unlocked(folder, manifest, say, full=full)
        _write(folder, manifest)
        return manifest
