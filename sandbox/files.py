"""Files into a run (``--file PATH``) and out of it (what the code wrote under ``/work``).

Inputs are read on the host, checked against :data:`MAX_INPUT_BYTES`, and written into ``/work``
before the code starts. Outputs come back in ``ExecResult.files`` within the caps in
:class:`~ragcoder.sandbox.settings.SandboxSettings` (``max_one_file_bytes`` each,
``max_file_bytes`` in all, ``max_files``); a file over a cap is named in ``files_skipped``.
Images are recognised by their first bytes (PNG, JPEG, GIF, SVG), not their names.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ragcoder.errors import TaskError

# Inputs sit in the /work tmpfs (64m by default) with whatever the code writes there.
MAX_INPUT_BYTES = 32 << 20

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"%PDF-", "pdf"),
)
IMAGE_KINDS = frozenset({"png", "jpeg", "gif", "svg"})
MIME = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
}


def file_kind(data: bytes) -> str:
    """'png', 'jpeg', 'gif', 'svg' or 'pdf' from the content; '' for anything else."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in head):
        return "svg"
    return ""


@dataclass(frozen=True)
class OutputFile:
    """A file a run wrote, once saved on the host."""

    name: str  # relative to /work
    size: int
    kind: str  # see file_kind
    path: Path | None = None  # where it was saved (None: not saved)
    data: bytes = field(default=b"", repr=False, compare=False)  # the content (outputs(), tool artifacts)

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS

    @property
    def mime(self) -> str:
        return MIME.get(self.kind, "application/octet-stream")

    def describe(self) -> str:
        """'wrote hist.png (23 KB), saved to out/hist.png'"""
        text = f"wrote {self.name} ({human_size(self.size)})"
        return text + (f", saved to {self.path}" if self.path is not None else "")


def human_size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB"
    return f"{size / 1_000_000:.1f} MB"


def safe_relative(name: str) -> str:
    """``name`` as a relative path that stays inside its folder, or ValueError."""
    norm = posixpath.normpath(name.replace("\\", "/"))
    if not name or norm.startswith(("/", "../")) or norm in (".", ".."):
        raise ValueError(f"not a relative file name inside the work folder: {name!r}")
    return norm


def outputs(files: Mapping[str, bytes]) -> list[OutputFile]:
    """What a run wrote, with the content (not saved)."""
    return [OutputFile(name, len(data), file_kind(data), data=data) for name, data in sorted(files.items())]


def save_outputs(files: Mapping[str, bytes], folder: Path) -> list[OutputFile]:
    """Write ``files`` under ``folder`` (created; same names overwritten: the latest run wins)."""
    saved = []
    for name, data in sorted(files.items()):
        path = folder / safe_relative(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        saved.append(OutputFile(name, len(data), file_kind(data), path))
    return saved


def skipped_lines(skipped: Mapping[str, int]) -> list[str]:
    return [
        f"did not bring back {name} ({human_size(size)}): over the sandbox's file size caps"
        for name, size in sorted(skipped.items())
    ]


def read_input_files(paths: Iterable[str | Path]) -> dict[str, bytes]:
    """``{file name: bytes}`` for ``--file`` paths; one clear error for a missing, unreadable,
    duplicate-named or too large file (nothing is half-read)."""
    files: dict[str, bytes] = {}
    total = 0
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise TaskError(f"--file {raw}: no such file", hint="give the path of an existing file")
        if path.name in files:
            raise TaskError(
                f"--file {raw}: another input is also named {path.name}",
                hint="inputs land in one folder by name: rename one of them",
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TaskError(f"--file {raw}: cannot read it ({exc.strerror or exc})") from exc
        total += len(data)
        if total > MAX_INPUT_BYTES:
            raise TaskError(
                f"--file {raw}: the inputs come to {human_size(total)}, over the {human_size(MAX_INPUT_BYTES)} limit",
                hint="the sandbox's /work is a small in-memory folder: pass a smaller sample",
            )
        files[path.name] = data
    return files


def inputs_note(files: Mapping[str, bytes | str]) -> str:
    """A sentence for the model's instruction naming the input files the code can open."""
    if not files:
        return ""
    names = ", ".join(
        f"{name} ({human_size(len(data if isinstance(data, bytes) else data.encode()))})"
        for name, data in sorted(files.items())
    )
    return f"Input files in the current working folder: {names}."
