"""The one safe parse of text that may or may not be Python."""

from __future__ import annotations

import ast


def parse_or_none(source: str, mode: str = "exec") -> ast.AST | None:
    """``ast.parse(source, mode=mode)``, or None when it is not Python (the one safe parse)."""
    try:
        return ast.parse(source, mode=mode)
    except (SyntaxError, ValueError):  # ValueError: null bytes in the source
        return None
