"""Getting Python code out of a model's reply: fenced or not, several blocks, truncated output."""

from __future__ import annotations

import ast

from ragcoder.chains.prompting.instruction import fences
from ragcoder.chains.prompting.safe_parse import parse_or_none

_PY_LANGS = {"", "python", "py", "python3"}


def _parses(code: str) -> bool:
    return parse_or_none(code) is not None


def _defines(code: str) -> set[str]:
    tree = parse_or_none(code)
    if not isinstance(tree, ast.Module):
        return set()
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}


def _trim_to_parsable(code: str) -> str:
    """Drop trailing lines until the code parses (a reply cut off by the token limit)."""
    lines = code.rstrip().splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if _parses(candidate):
            return candidate
    return code


def _strip_prose(text: str) -> str:
    """Unfenced reply: drop leading prose lines until the rest parses as Python."""
    lines = text.strip().splitlines()
    for start in range(len(lines)):
        candidate = "\n".join(lines[start:])
        if _parses(candidate):
            return candidate
        trimmed = _trim_to_parsable(candidate)
        if trimmed != candidate and _parses(trimmed) and _defines(trimmed):
            return trimmed
    return text.strip()


def extract_code(reply: str) -> str:
    """Return the Python program in ``reply``.

    Fenced blocks tagged python (or untagged) are preferred. With several blocks, the blocks that
    define functions or classes are joined in order (usage examples that only call them are
    dropped when a defining block exists). An
    unclosed fence (truncated reply) is trimmed back to its last parsable line. Later definitions
    override earlier ones when the blocks are joined, as they would in one module.
    """
    blocks = [f.body for f in fences(reply) if f.lang in _PY_LANGS and f.body.strip()]
    if not blocks:
        return _strip_prose(reply)
    blocks = [b if _parses(b) else _trim_to_parsable(b) for b in blocks]
    defining = [b for b in blocks if _defines(b)]
    chosen = defining or blocks
    return "\n\n".join(b.strip() for b in chosen) + "\n"
