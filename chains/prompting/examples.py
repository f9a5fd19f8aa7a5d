"""The examples an instruction gives, as ``assert`` lines the agent can run.

Read from the forms requests (and HumanEval's docstrings) write them in:

- doctests: ``>>> f(1)`` then the expected output on the next lines;
- arrows on a line of their own: ``f(2) ➞ 4``, ``=>``, ``==>``, ``->``, ``==``, a trailing
  worked sum kept to its result (``f("5 apples", 19) -> 19 - 5 = 14``), or a comment
  (``f(15)   # returns "db1111db"``);
- the argument named in words: ``For num = "AB" the output should be 1.``;
- ``Input: [4, 2, 3]`` followed by ``Output: [2, 1]``;
- ``assert`` lines;
- inside a sentence, as one-line requests write them: ``... of n. For n = 123 the output should
  be 6.``, ``e.g. `digits(123)` returns `6`.`` (:func:`prose_asserts`).

Only literal arguments and a literal expected value make a case (never prose or arithmetic), and
the ``For ...`` and ``Input:``/``Output:`` forms, which name no function, only for a request with one
function to write, whose parameters the arguments must match.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from ragcoder.chains.prompting.safe_parse import parse_or_none

# An example on a line of its own: `f(2) == 4`, `f(2) ➞ 4`, `f(2) => 4`, `f(2) ==> 4`, `f(2) -> 4`,
# `f(2)  # returns 4`. Only when the left side is a call and the right side a Python literal.
_ARROW_EXAMPLE_RE = re.compile(
    r"^\s*(?:[-*]\s+)?([A-Za-z_][\w.]*\(.*\))\s*(?:==>|==|=>|➞|->|#\s*(?:returns?:?|==>|=>|➞|->))\s*(.+?)\s*$",
    re.M,
)
_FOR_OUTPUT_RE = re.compile(
    r"^\s*for\s+(.+?),?\s+the\s+(?:output|result)\s+should\s+be:?\s+(.+?)\s*$", re.M | re.I
)
_INPUT_OUTPUT_RE = re.compile(r"^\s*input\s*:\s*(.+?)\s*\n\s*output\s*:\s*(.+?)\s*$", re.M | re.I)
_ASSERT_LINE_RE = re.compile(r"^\s*(assert\s.+)$", re.M)
# Inside a sentence: "For n = 123 the output should be 6", "`f(123)` returns `6`", "f(2) == 4".
_PROSE_FOR_RE = re.compile(
    r"\bfor\s+(?:example,?\s+|instance,?\s+)?((?:(?!\bfor\b)[^\n])+?),?\s+the\s+(?:output|result|answer)"
    r"\s+(?:should\s+be|must\s+be|will\s+be|is)\s+(?=\S)",
    re.I,
)
_PROSE_CALL_RE = (
    r"`?\b{name}\(([^()\n]*(?:\([^()\n]*\)[^()\n]*)*)\)`?\s*(?:==>|==|=>|➞|→|->|{words})\s+(?=\S)"
)
_PROSE_VERBS = (
    r"(?:should|must|will)\s+(?:return|give|output|be)|returns|gives|outputs|evaluates\s+to|equals|is"
)
# A wrapped sentence going on: a lower-case word that is not a call ("if it can", not "f(3) ...").
_GOES_ON_RE = re.compile(r"\s*[a-z]\w*\b(?!\s*\()")
# What may follow an example's value in a sentence (so "returns 6 times n" is no example).
_PROSE_VALUE_END_RE = re.compile(r"\s*(?:$|#|[,;:!?)\]]|\.(?!\w)|\b(?:and|but|while|whereas)\b)", re.I)
_JSON_WORDS = {"true": "True", "false": "False", "null": "None"}

Signature = tuple[str, tuple[str, ...]]  # a function's name and its parameters' names


def example_asserts(text: str, shown: frozenset[str], target: Signature | None) -> list[str]:
    """The ``assert`` lines ``text`` (dedented) gives. ``shown``: the functions whose signature it
    shows (arrow examples of others are skipped); ``target``: the one function to write, if one."""
    cases = _doctest_asserts(text.splitlines())

    def add(stmt: str) -> None:
        if stmt not in cases:
            cases.append(stmt)

    for match in _ARROW_EXAMPLE_RE.finditer(text):
        call, want = match.group(1), _expected(match.group(2))
        if shown and call.split("(", 1)[0] not in shown:
            continue  # an example of some other function
        if want is not None and _is_literal_call(call):
            add(f"assert {call} == {want}")
    if target is not None:
        for regex in (_FOR_OUTPUT_RE, _INPUT_OUTPUT_RE):
            for match in regex.finditer(text):
                call, want = _call_of(target, match.group(1)), _expected(match.group(2))
                if call is not None and want is not None:
                    add(f"assert {call} == {want}")
    for match in _ASSERT_LINE_RE.finditer(text):
        stmt = match.group(1).strip().rstrip("`").strip()
        if parse_or_none(stmt) is not None:
            add(stmt)
    return cases


def prose_asserts(prose: str, name: str | None, target: Signature | None) -> list[str]:
    """The examples a sentence gives: ``For n = 123 the output should be 6.`` (for the one
    function to write, its parameters named or in order) and a call of ``name`` with literal
    arguments followed by ``==``, an arrow or "returns"/"should return"/"is" and a literal that
    ends the clause (``f(2) returns 4, and ...``; never ``f(2) returns 4 times n``)."""
    found: list[tuple[str | None, str | None]] = []
    if target is not None:
        for match in _PROSE_FOR_RE.finditer(prose):
            found.append((_call_of(target, match.group(1)), _clause_value(prose[match.end() :])))
    if name is not None:
        pattern = _PROSE_CALL_RE.format(name=re.escape(name), words=_PROSE_VERBS)
        for match in re.finditer(pattern, prose, re.I):
            call = f"{name}({match.group(1)})"
            found.append((call if _is_literal_call(call) else None, _clause_value(prose[match.end() :])))
    cases = [f"assert {call} == {want}" for call, want in found if call is not None and want is not None]
    return list(dict.fromkeys(cases))


def _clause_value(rest: str) -> str | None:
    """The literal that starts ``rest`` and ends its clause: `` `6` ``, or the longest literal
    prefix followed by punctuation, "and", or the end (None where a bare tuple could be meant)."""
    if rest.startswith("`"):
        inner, tick, after = rest[1:].partition("`")
        return _expected(inner) if tick and _PROSE_VALUE_END_RE.match(after) else None
    rest, _, next_line = rest.partition("\n")
    rest = rest[:200]  # a value sits on one line, and is short
    if _GOES_ON_RE.match(next_line) and not _PROSE_VALUE_END_RE.match(next_line):
        rest = rest + " …"  # "returns 4\nif it can": the sentence goes on, so only a value inside it counts
    best = None
    for end in range(1, len(rest) + 1):
        if end < len(rest) and not (rest[end].isspace() or rest[end] in ".,;:!?`"):
            continue
        head, after = rest[:end].strip(), rest[end:]
        if head.endswith(".") or not _PROSE_VALUE_END_RE.match(after):
            continue  # "6." ends a sentence, it is no float
        value = _JSON_WORDS.get(head, head)
        if _is_literal(value) and _is_whole(value):
            if _is_literal(f"[{head}]") and len(ast.literal_eval(f"[{head}]")) > 1:
                return None  # "returns 3, 9": a tuple or the value and more prose; no guessing
            best = value
    return best


def _expected(src: str) -> str | None:
    """The expected value as a Python literal: JSON words mapped, a worked sum kept to its result."""
    want = src.strip().rstrip(".,;").strip()
    want = _JSON_WORDS.get(want, want)
    if _is_literal(want):
        return want
    if " = " in want:  # "19 - 5 - 6 = 8": the arithmetic shows the way, the last term is the value
        tail = want.rsplit(" = ", 1)[1].strip()
        return tail if _is_literal(tail) else None
    return None


def _call_of(target: Signature, args: str) -> str | None:
    """``name(...)`` from ``args`` written as literals in order (``[4, 2, 3]``) or named by the
    parameters (``lst = [1, 2], k = 3``); None unless they fit the parameters exactly."""
    name, params = target
    tree = parse_or_none(f"_f({args.strip().rstrip('.,;')})", "eval")
    if not isinstance(tree, ast.Expression) or not isinstance(tree.body, ast.Call):
        return None
    call = tree.body
    if call.keywords and not call.args and len(call.keywords) == len(params):
        named = {k.arg: k.value for k in call.keywords}
        if set(named) != set(params):
            return None
        values: Sequence[ast.expr] = [named[p] for p in params]
    elif call.args and not call.keywords and len(call.args) == len(params):
        values = call.args
    else:
        return None
    sources = [ast.unparse(v) for v in values]
    return f"{name}({', '.join(sources)})" if all(_is_literal(s) for s in sources) else None


def _doctest_asserts(lines: list[str]) -> list[str]:
    """``>>> expr`` followed by a literal expected output becomes ``assert expr == output``."""
    cases: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip().removeprefix('"""').removeprefix("'''").strip()
        if not stripped.startswith(">>> "):
            i += 1
            continue
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
        is_expr = parse_or_none(expr, "eval") is not None
        if is_expr and not expr.startswith("print(") and want and _is_literal(want):
            cases.append(f"assert {expr} == {want}")
        i = j
    return cases


def _is_literal(src: str) -> bool:
    """Expected output we can compare with ==: a Python literal (not printed text)."""
    try:
        ast.literal_eval(src)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _is_whole(src: str) -> bool:
    """``src`` is one expression with nothing after it (``6 # six`` is 6 and a comment)."""
    tree = parse_or_none(src, "eval")
    return isinstance(tree, ast.Expression) and ast.get_source_segment(src, tree.body) == src.strip()


def _is_literal_call(src: str) -> bool:
    """`name(literal, ...)`: a call whose arguments are all literals (so the test can run as is)."""
    tree = parse_or_none(src, "eval")
    if not isinstance(tree, ast.Expression) or not isinstance(tree.body, ast.Call):
        return False
    args = [*tree.body.args, *(k.value for k in tree.body.keywords)]
    return all(_is_literal(ast.unparse(a)) for a in args)
