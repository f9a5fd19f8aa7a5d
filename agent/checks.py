"""What decides that code works: the user's tests, else examples found in the instruction.

Never hidden benchmark tests: only what the user wrote. Doctest lines (``>>> f(1)`` followed by
the expected output) and ``assert`` lines in the instruction become test cases.
"""

from __future__ import annotations

import ast
import re
import textwrap

_ASSERT_LINE_RE = re.compile(r"^\s*(assert\s.+)$", re.M)
# `f(2) == 4`, `f(2) -> 4` or `f(2) returns 4` in prose: too loose to trust; only doctests and asserts.


def _is_expr(src: str) -> bool:
    try:
        ast.parse(src, mode="eval")
    except SyntaxError:
        return False
    return True


def _is_literal(src: str) -> bool:
    """Expected doctest output we can compare with ==: a Python literal (not printed text)."""
    try:
        ast.literal_eval(src)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def extract_example_tests(instruction: str) -> str | None:
    """Test source built from doctest examples and assert lines in ``instruction`` (None if none)."""
    text = textwrap.dedent(instruction)
    cases: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith(">>> "):
            expr = stripped[4:].strip()
            expected: list[str] = []
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(">>>"):
                expected.append(lines[j].strip())
                j += 1
            want = " ".join(expected).strip()
            if _is_expr(expr) and not expr.startswith("print(") and want and _is_literal(want):
                cases.append(f"assert {expr} == {want}")
            i = j
            continue
        i += 1
    for match in _ASSERT_LINE_RE.finditer(text):
        stmt = match.group(1).strip().rstrip("`").strip()
        try:
            ast.parse(stmt)
        except SyntaxError:
            continue
        if stmt not in cases:
            cases.append(stmt)
    return "\n".join(cases) + "\n" if cases else None
