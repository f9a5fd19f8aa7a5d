"""The ONNX form of an installed model (and of a fine-tuned one): made once, recorded, checked.

``ragcoder models install`` calls :func:`ensure_onnx` after its GGUF -> HF conversion (and again
on a model installed before this existed). It runs the ONNX Runtime GenAI builder (int4 weights
for the CPU) in a child process (it peaks at about 13 GB for the 1.5B model and frees it all on
exit) into a temporary folder, hashes every file into the manifest (``installed.json`` →
``engines.ort``: folder, size, sha256 per file, seconds) and renames the folder into place. A
folder whose files do not match their record (an interrupted or damaged conversion) is made again.

Then the HF weights (fp16, 3.6 GB for Qwen 1.5B) are dropped unless ``keep_hf``: no engine reads
them once the int8 file exists, and a command that needs them (training, an adapter, fp32 or GPU
loads) rebuilds them from the GGUF the install keeps (:mod:`ragcoder.chains.llm.installed_parts`).

:func:`convert_adapter` merges a LoRA adapter into the base weights and converts the result into
``adapters/<adapter id>/ort-int4``, recorded under ``adapters`` in the manifest.

With ``gguf_blocks`` (behind a flag while its dev pass@1 is measured) every quantized matmul is then
rewritten to read the GGUF's own Q4_K / Q6_K blocks instead of the builder's re-rounded int4
(chains/llm/onnx_gguf.py); the record says ``"weights": "gguf-blocks"``. Not for adapters: a merged
LoRA changes the weights the GGUF holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ragcoder.chains.llm.engines import ADAPTERS_DIR, ORT_DIR, adapter_id, is_onnx_folder, sizes_match
from ragcoder.chains.llm.installed_parts import drop_weights_unlocked, has_hf_weights
from ragcoder.chains.llm.models import (
    GGUF_NAME,
    HF_SUBDIR,
    known_model,
    model_dir,
    model_lock,
    read_manifest,
    write_manifest,
)

from ragcoder.errors import ModelInstallError, ModelNotInstalled

Progress = Callable[[str], None]
PRECISION = "int4"  # the builder's weight type for the CPU (chosen in docs/benchmarks.md)
BUILDER_OPTIONS: tuple[str, ...] = ()  # extra `--extra_options KEY=VALUE` for the builder
_CHUNK = 8 << 20


def _quiet(_: str) -> None:
    pass


def file_hashes(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative name: {"size": bytes, "sha256": hex}}`` for every file under ``folder``."""
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        hashes[str(path.relative_to(folder))] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    return hashes


def matches_record(folder: Path, record: dict[str, Any] | None, *, full: bool = True) -> bool:
    """Do ``folder``'s files match ``record`` (sizes; and hashes when ``full``)? Extra files do not count."""
    if not sizes_match(folder, record):
        return False
    return not full or file_hashes(folder).items() >= record["files"].items()


def build_onnx(
    hf_dir: Path,
    out_dir: Path,
    *,
    precision: str = PRECISION,
    say: Progress = _quiet,
    gguf: Path | None = None,
) -> dict[str, Any]:
    """Run the ONNX Runtime GenAI builder on ``hf_dir`` into ``out_dir`` (replaced); its record.
    With ``gguf`` (the GGUF ``hf_dir`` was dequantized from) the matmuls then read its blocks."""
    if importlib_missing("onnxruntime_genai"):
        raise ModelInstallError(
            "converting to the ONNX form needs onnxruntime-genai (its model builder)",
            hint="pip install onnxruntime-genai onnx-ir, or pass --engine torch",
        )
    started = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".onnx-build-", dir=out_dir.parent) as tmp:
        built = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(built),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            str(Path(tmp) / "cache"),
        ]
        if BUILDER_OPTIONS:
            cmd += ["--extra_options", *BUILDER_OPTIONS]
        say(f"converting to ONNX {precision} for ONNX Runtime (a few minutes; peaks near 13 GB for 1.5B)...")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not is_onnx_folder(built):
            last = ([line for line in proc.stderr.splitlines() if line.strip()] or ["no output"])[-1]
            raise ModelInstallError(
                f"the ONNX conversion failed: {last[:300]}",
                hint="check free memory (about 13 GB), then retry",
            )
        _run_child(["--halve-embedding", str(built)])  # lossless: chains/llm/onnx_graph.py
        rewrite: dict[str, Any] = {}
        if gguf is not None:
            say("writing the GGUF's own Q4_K/Q6_K blocks into the ONNX matmuls...")
            exact = Path(tmp) / "gguf-blocks"
            rewrite = json.loads(_run_child(["--gguf-weights", str(built), str(gguf), str(exact)]))
            shutil.rmtree(built)
            os.replace(exact, built)
        files = file_hashes(built)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(built, out_dir)
    return {
        "dir": out_dir.name,
        "precision": precision,
        "size": sum(f["size"] for f in files.values()),
        "files": files,
        "seconds": round(time.perf_counter() - started, 1),
        **rewrite,
    }


def importlib_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


@contextlib.contextmanager
def hf_weights(folder: Path, say: Progress) -> Iterator[Path]:
    """An HF folder of the installed model: its own ``hf/``, or one made from its GGUF for the
    length of the block (the default install keeps the GGUF, not the 3.6 GB HF weights)."""
    if has_hf_weights(folder / HF_SUBDIR):
        yield folder / HF_SUBDIR
        return
    if not (folder / GGUF_NAME).is_file():
        raise ModelNotInstalled(f"{folder.name} has neither its GGUF nor an HF folder", hint="reinstall it")
    with tempfile.TemporaryDirectory(prefix=".hf-", dir=folder) as tmp:
        say("dequantizing the GGUF into a temporary HF folder (about a minute)...")
        _run_child(["--gguf-to-hf", str(folder / GGUF_NAME), str(Path(tmp) / HF_SUBDIR)])
        yield Path(tmp) / HF_SUBDIR


def ensure_onnx(
    name: str,
    *,
    keep_hf: bool = False,
    say: Progress | None = None,
    full_check: bool = True,
    gguf_blocks: bool = False,
) -> dict[str, Any]:
    """Make (or check, and remake when damaged) the ONNX form of the installed model ``name``;
    then drop its HF folder unless ``keep_hf`` or the registry keeps it. Returns the manifest.
    ``gguf_blocks``: the matmuls read the GGUF's own blocks (a form made without is made again)."""
    say = say or _quiet
    known = known_model(name)
    keep_hf = keep_hf or known.keep_hf
    with model_lock(name):
        manifest = read_manifest(name)
        if manifest is None:
            raise ModelNotInstalled(
                f"model {name!r} is not installed", hint=f"run `ragcoder models install {name}`"
            )
        folder = model_dir(name)
        record = manifest.get("engines", {}).get("ort")
        wrong_weights = gguf_blocks and (record or {}).get("weights") != "gguf-blocks"
        if not wrong_weights and matches_record(folder / ORT_DIR, record, full=full_check):
            say(f"ONNX form checked: {folder / ORT_DIR}")
        else:
            if wrong_weights:
                say("the ONNX form has the builder's int4 weights: making it again from the GGUF's blocks")
            elif record or (folder / ORT_DIR).exists():
                say("the ONNX form is incomplete or does not match its record: making it again")
            if gguf_blocks and not (folder / GGUF_NAME).is_file():
                raise ModelNotInstalled(f"{name} has no GGUF to take the blocks from", hint="reinstall it")
            with hf_weights(folder, say) as hf_dir:
                record = build_onnx(
                    hf_dir,
                    folder / ORT_DIR,
                    precision=known.onnx_precision or PRECISION,
                    say=say,
                    gguf=folder / GGUF_NAME if gguf_blocks else None,
                )
            manifest.setdefault("engines", {})["ort"] = record
            write_manifest(folder, manifest)
        if not keep_hf and has_hf_weights(folder / HF_SUBDIR) and (folder / GGUF_NAME).is_file():
            drop_weights_unlocked(folder, manifest)
            write_manifest(folder, manifest)
            say(
                "dropped the HF weights (rebuilt from the GGUF when a command needs them; --keep-hf keeps them)"
            )
        return manifest


def convert_adapter(name: str, adapter: str | Path, *, say: Progress | None = None) -> Path:
    """Merge the LoRA ``adapter`` into the installed model ``name`` and make its ONNX form
    (``adapters/<id>/ort-int4``, recorded in the manifest); a no-op when it is there and intact."""
    say = say or _quiet
    adapter = Path(adapter).expanduser().resolve()
    if not (adapter / "adapter_config.json").is_file():
        raise ModelNotInstalled(
            f"LoRA adapter folder {str(adapter)!r} has no adapter_config.json",
            hint="pass a folder written by `ragcoder finetune train` (peft's save_pretrained)",
        )
    ident = adapter_id(adapter)
    with model_lock(name):
        manifest = read_manifest(name)
        if manifest is None:
            raise ModelNotInstalled(
                f"model {name!r} is not installed", hint=f"run `ragcoder models install {name}`"
            )
        folder = model_dir(name)
        target = folder / ADAPTERS_DIR / ident / ORT_DIR
        record = manifest.get("adapters", {}).get(ident, {}).get("ort")
        if matches_record(target, record):
            say(f"adapter already converted: {target}")
            return target
        with (
            hf_weights(folder, say) as base,
            tempfile.TemporaryDirectory(prefix=".merged-", dir=folder) as tmp,
        ):
            say(f"merging the adapter {adapter.name} into {name}...")
            merged = Path(tmp) / "merged"
            _run_child(["--merge", str(base), str(adapter), str(merged)])
            record = build_onnx(
                merged, target, precision=known_model(name).onnx_precision or PRECISION, say=say
            )
        manifest.setdefault("adapters", {})[ident] = {"source": str(adapter), "ort": record}
        write_manifest(folder, manifest)
        return target


def _run_child(args: list[str]) -> str:
    """Merging and dequantizing load the fp32 model (7 GB for 1.5B): in a child process, so that
    memory is gone before the builder starts. Returns the child's standard output."""
    proc = subprocess.run(
        [sys.executable, "-m", "ragcoder.chains.llm.onnx_convert", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = ([line for line in proc.stderr.splitlines() if line.strip()] or ["no output"])[-1]
        raise ModelInstallError(
            f"{args[0][2:]} failed: {last[:300]}", hint="check the adapter matches the model"
        )
    return proc.stdout


def merge_adapter(base: Path, adapter: Path, out: Path) -> None:
    """Save ``base`` with ``adapter`` merged into it as an HF folder, in the base's dtype on disk
    (merged in fp32)."""
    import warnings

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    stored = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    with warnings.catch_warnings():  # peft 0.21 calls an alias transformers 5 deprecates
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    fp16_max = torch.finfo(torch.float16).max
    if str(stored).endswith("float16") and all(p.abs().max().item() < fp16_max for p in model.parameters()):
        model = model.to(torch.float16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


if __name__ == "__main__":  # the child process of _run_child
    if len(sys.argv) == 5 and sys.argv[1] == "--merge":
        merge_adapter(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--halve-embedding":
        from ragcoder.chains.llm.onnx_graph import halve_embedding

        halve_embedding(Path(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "--gguf-weights":
        from ragcoder.chains.llm.onnx_gguf import write_gguf_weights

        report = write_gguf_weights(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        print(json.dumps(report.as_record()))
    elif len(sys.argv) == 4 and sys.argv[1] == "--gguf-to-hf":
        from ragcoder.chains.llm.convert import convert_gguf_to_hf

        convert_gguf_to_hf(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(
            "usage: python -m ragcoder.chains.llm.onnx_convert --merge BASE ADAPTER OUT | --gguf-to-hf GGUF OUT"
            " | --halve-embedding FOLDER | --gguf-weights ONNX_FOLDER GGUF OUT"
        )
