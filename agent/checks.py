"""What decides that code works: the user's tests, else examples found in the instruction.

Never hidden benchmark tests: only what the user wrote. Doctest lines (``>>> f(1)`` followed by
the expected output) and ``assert`` lines in the instruction become test cases.
"""

from __future__ import annotations

import ast
import re
import textwrap

_ASSERT_LINE_RE = re.compile(r"^\s*(assert\s.+)$", re.M)
# An example on a line of its own: `f(2) == 4`, `f(2) ➞ 4`, `f(2) => 4`, `f(2) ==> 4`, `f(2) -> 4`.
# Only when the left side is a call and the right side a Python literal (not prose or arithmetic).
_ARROW_EXAMPLE_RE = re.compile(
    r"^\s*(?:[-*]\s+)?([A-Za-z_][\w.]*\(.*\))\s*(?:==>|==|=>|➞|->)\s*(.+?)\s*$", re.M
)
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}


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


def _is_literal_call(src: str) -> bool:
    """`name(literal, ...)`: a call whose arguments are all literals (so the test can run as is)."""
    try:
        node = ast.parse(src, mode="eval").body
    except SyntaxError:
        return False
    if not isinstance(node, ast.Call):
        return False
    args = [*node.args, *(k.value for k in node.keywords)]
    return all(_is_literal(ast.unparse(a)) for a in args)


def extract_example_tests(instruction: str) -> str | None:
    """Test source built from doctest examples and assert lines in ``instruction`` (None if none)."""
    text = textwrap.dedent(instruction)
    cases: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip().removeprefix('"""').removeprefix("'''").strip()
        if stripped.startswith(">>> "):
            expr = stripped[4:].strip()
            expected: list[str] = []
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(">>>"):
                line = lines[j].strip()
                if line.startswith(('"""', "'''")):  # the docstring closes: the example ended
                    break
                expected.append(line.removesuffix('"""').removesuffix("'''").rstrip())
                j += 1
            want = " ".join(expected).strip()
            if _is_expr(expr) and not expr.startswith("print(") and want and _is_literal(want):
                cases.append(f"assert {expr} == {want}")
            i = j
            continue
        i += 1
    defined = set(re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", text, re.M))
    for match in _ARROW_EXAMPLE_RE.finditer(text):
        call, want = match.group(1), match.group(2).rstrip(".,;")
        if defined and call.split("(", 1)[0] not in defined:  # an example of some other function
            continue
        want = _JSON_WORDS.get(want, want)
        stmt = f"assert {call} == {want}"
        if _is_literal_call(call) and _is_literal(want) and stmt not in cases:
            cases.append(stmt)
    for match in _ASSERT_LINE_RE.finditer(text):
        stmt = match.group(1).strip().rstrip("`").strip()
        try:
            ast.parse(stmt)
        except SyntaxError:
            continue
        if stmt not in cases:
            cases.append(stmt)
    return "\n".join(cases) + "\n" if cases else None
