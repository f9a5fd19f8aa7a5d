"""Which files under the folders a user indexes are read, and the one check each file passes.

A file that cannot be indexed (a name that is not UTF-8, too large, unreadable, binary posing as
text, a minified line) is named with the reason and skipped; the rest of the folder is indexed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ragcoder.chains.retrieval.splitters import INDEXABLE_SUFFIXES, text_problem

MAX_FILE_BYTES = 2_000_000
SKIPPED_DIRS = {
    ".git",
    ".hg",
    ".venv",
    "venv",
    "__pycache__",
    "node_modules",
    ".tox",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "site-packages",
    "build",
    "dist",
    ".eggs",
}
# The evaluation split rule: HumanEval is never part of the index (it would leak the answers).
EXCLUDED_NAME_PARTS = ("humaneval", "human_eval", "human-eval")


def is_excluded(path: Path) -> bool:
    lowered = str(path).lower()
    return any(part in lowered for part in EXCLUDED_NAME_PARTS)


def iter_files(roots: Iterable[Path]) -> Iterable[Path]:
    for root in roots:
        if root.is_file():
            yield root
            continue
        for path in sorted(root.rglob("*")):
            if any(part in SKIPPED_DIRS for part in path.relative_to(root).parts[:-1]):
                continue
            if path.is_file() and path.suffix.lower() in INDEXABLE_SUFFIXES:
                yield path


def shown_path(path: str | Path) -> str:
    """A path as text that can be printed and stored: bytes that are not UTF-8 as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def file_problem(path: Path) -> tuple[str | None, bytes]:
    """Why ``path`` cannot be indexed (None when it can), and its bytes: every file passes this one
    check before anything is written, so a bad one is skipped instead of breaking the index."""
    if shown_path(path) != str(path):  # Python keeps undecodable bytes as lone surrogates
        return "its name is not valid UTF-8 (rename it to index it)", b""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return f"{size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit", b""
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})", b""
    return text_problem(data), data
