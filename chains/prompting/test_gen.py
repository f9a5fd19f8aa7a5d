"""Tests from the request: a prompt that asks the model for ``assert`` lines over the function the
request names, and the parsing that keeps only usable ones.

The model's tests are the weakest check there is (it may be wrong about the task in the same way
its code is), so the agent uses them to rank candidates against each other, never to call code
right on their own: see :mod:`ragcoder.agent.select`. What is kept here is only what can run: one
``assert`` statement that parses, calls the named function, and reads no name the test cannot
have (builtins, the function, and names the request's own code defines are allowed).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate
from ragcoder.chains.prompting.instruction import BUILTIN_NAMES, read_instruction

# (no function here starts with "test": test modules import them, and pytest would collect those)

TEST_SYSTEM = (
    "You are a careful Python tester. You read a task and write test cases for it as one-line "
    "assert statements, working out each expected value by hand from the task's words."
)

TEST_USER = """Task:
{instruction}

Write {count} different test cases for the function `{name}` described above, one `assert` per
line, in the form `assert {name}(...) == expected`. Cover ordinary inputs and edge cases (empty,
zero, one element, negative, large). Use only literal values. Do not implement `{name}` and do
not define helpers. Reply with one ```python block of assert lines only."""

DEFAULT_TEST_COUNT = 8  # per reply: CodeT asks for several small tests; more made 1.5B models drift
MAX_TEST_CHARS = 300  # a longer assert is usually a pasted implementation, not a test case


def prompt_for_tests() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", TEST_SYSTEM), ("human", TEST_USER)])


def messages_for_tests(instruction: str, name: str, count: int = DEFAULT_TEST_COUNT) -> list[BaseMessage]:
    """The chat messages that ask for ``count`` asserts over ``name``."""
    return prompt_for_tests().format_messages(instruction=instruction.strip(), name=name, count=count)


def find_function_name(instruction: str, entry_point: str | None = None) -> str | None:
    """The function the request asks for: the task's ``entry_point``, else what the instruction
    names (:attr:`Instruction.function_name`, the reader the examples use too), else None."""
    if entry_point and entry_point.isidentifier():
        return entry_point
    return read_instruction(instruction).function_name


def _names_read(node: ast.AST) -> set[str]:
    """Names the statement reads that it does not bind itself (comprehension and lambda variables)."""
    bound: set[str] = set()
    read: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (read if isinstance(sub.ctx, ast.Load) else bound).add(sub.id)
        elif isinstance(sub, ast.arg):
            bound.add(sub.arg)
    return read - bound


def _calls(node: ast.AST, name: str) -> bool:
    return any(
        isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == name
        for sub in ast.walk(node)
    )


def usable_test(
    source: str, name: str, allowed: Iterable[str] = (), max_chars: int | None = MAX_TEST_CHARS
) -> str | None:
    """``source`` as one normalised ``assert`` over ``name``, or None when it cannot serve as a test."""
    if max_chars is not None and len(source) > max_chars:
        return None
    try:
        tree = ast.parse(source.strip())
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    statement = tree.body[0]
    if not _calls(statement.test, name):
        return None
    if _names_read(statement) - BUILTIN_NAMES - {name} - set(allowed):
        return None  # a helper or variable the test never defines: it could only raise NameError
    statement.msg = None  # the harness reports actual and expected values itself
    return ast.unparse(statement)


def parse_generated_tests(reply: str, name: str, allowed: Iterable[str] = ()) -> list[str]:
    """The usable asserts in one reply, in order, without repeats.

    Read line by line (a reply cut off by the token limit still yields its complete lines); an
    assert spread over several lines is joined while its brackets are open.
    """
    allowed = set(allowed)
    tests: list[str] = []
    lines = reply.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line.startswith("assert "):
            continue
        while _open_brackets(line) > 0 and i < len(lines) and not lines[i].strip().startswith("```"):
            line += " " + lines[i].strip()
            i += 1
        test = usable_test(line, name, allowed)
        if test is not None and test not in tests:
            tests.append(test)
    return tests


def _open_brackets(text: str) -> int:
    depth = 0
    for char in re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "", text):
        depth += char in "([{"
        depth -= char in ")]}"
    return depth
