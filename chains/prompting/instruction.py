"""The code inside an instruction: where it is, parsing a fragment, and which functions are stubs.

Shared by the agent's prelude (what the answer must keep) and the retrieval gate (whether the task
is a self-contained stub).
"""

from __future__ import annotations

import ast
import re

_FENCE_RE = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_CODE_START_RE = re.compile(r"^(?:from\s+[\w.]+\s+import\s|import\s+\w|def\s|class\s|@)", re.M)


def parse_fragment(source: str) -> ast.Module | None:
    """Parse code that may end in a signature and docstring with no body yet."""
    for candidate in (source, source.rstrip() + "\n    pass\n"):
        try:
            return ast.parse(candidate)
        except (SyntaxError, ValueError):
            continue
    return None


def code_regions(instruction: str) -> list[str]:
    """The fenced blocks, or else everything from the first line that starts code."""
    fenced = [block for block in _FENCE_RE.findall(instruction) if block.strip()]
    if fenced:
        return fenced
    start = _CODE_START_RE.search(instruction)
    return [instruction[start.start() :]] if start else []


def is_stub(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    """A signature left for the model to fill: only a docstring, ``pass`` or ``...``."""
    return is_stub_body(node.body)


def is_stub_body(body: list[ast.stmt]) -> bool:
    """Statements that hold no code: docstrings (or other constants), ``pass``, ``...``."""
    for statement in body:
        if isinstance(statement, ast.Pass):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # the docstring, or ``...``
        return False
    return True
