"""Reading the JSON a small local model writes: as written, else as it evidently meant it.

Tool-call arguments and JSON answers of Qwen2.5-Coder-1.5B (int8, greedy) are mostly valid JSON;
the misses seen are Python's triple-quoted strings for code, the closing braces dropped, and the
closing braces written before a string's closing quote (``"...!}}"`` for ``"...!"}}``), which
greedy int8 decoding picks over a near tie. :func:`read_json` reads those; a value cut off inside
a string or after a partial number is never completed (no half-read tool call is ever executed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = ["read_json", "read_json_prefix"]


def _python_literal(text: str) -> Any:
    """``text`` read as a Python literal with JSON's null/true/false: models write code arguments as
    triple-quoted strings, which JSON lacks. ``ast.literal_eval`` evaluates nothing else."""
    import ast
    import io
    import tokenize

    words = {"null": "None", "true": "True", "false": "False"}
    try:
        tokens = [
            (t.type, words.get(t.string, t.string) if t.type == tokenize.NAME else t.string)
            for t in tokenize.generate_tokens(io.StringIO(text).readline)
        ]
        return ast.literal_eval(tokenize.untokenize(tokens).strip())
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError, tokenize.TokenError) as error:
        raise ValueError("not JSON") from error


def read_json_prefix(text: str) -> tuple[Any, str]:
    """The JSON value ``text`` starts with (or, failing that, all of it as a Python literal) and the rest."""
    text = text.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(text)
        return value, text[end:]
    except ValueError:
        return _python_literal(text), ""


def _closers(text: str) -> str | None:
    """The brackets that close what ``text`` leaves open (``"}}"``, ``"]}"``), or None when it ends
    inside a string (cut off: no guessing what was left out) or closes a bracket it never opened."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and (not stack or stack.pop() != char):
            return None
    return None if in_string else "".join(reversed(stack))


def _braces_moved_out(body: str) -> str | None:
    """``body`` with the brackets that end its last string moved after the closing quote, when the
    string did not open them (``"the end}}"`` for ``"the end"}}``) and they close the JSON exactly."""
    if not body.endswith('"'):
        return None
    tail = len(body) - 1 - len(body[:-1].rstrip("}]"))
    if tail == 0:
        return None
    text = body[: len(body) - 1 - tail]
    start = text.rfind('"')  # the last string's opening quote (its text holds no quote after it)
    inside = text[start + 1 :]
    opened = sum(inside.count(c) for c in "{[") - sum(inside.count(c) for c in "}]")
    moved = text + '"' + body[len(text) : -1]
    return moved if opened < tail and _closers(moved) == "" else None


def _repairs(body: str) -> Iterator[str]:
    """``body`` as written, then as a small model meant it. Qwen2.5-1.5B drops the closing braces
    (``{"a": 1}`` for ``{"a": 1}}``) or writes them before the string's closing quote (``"...!}}"``);
    greedy int8 decoding picks either over a near tie (docs/benchmarks.md, chat model suites)."""
    body = body.strip()
    yield body
    moved = _braces_moved_out(body)
    if moved is not None:
        yield moved
    closers = _closers(body)
    if closers and body.endswith(('"', "}", "]")):  # after a whole value; `[1, 2` may be `[1, 2, 3` cut off
        yield body + closers


def read_json(text: str) -> Any:
    """The JSON value ``text`` starts with, as the model meant it (:func:`_repairs`); a Python
    literal is read too (:func:`_python_literal`). Raises ValueError when no reading works."""
    for candidate in _repairs(text):
        try:
            return read_json_prefix(candidate)[0]
        except ValueError:
            continue
    raise ValueError("not valid JSON")
