"""What decides that code works: the user's tests, else examples found in the instruction; and
the model's own tests, which only rank candidates (and call code self-tested, never verified).

Never hidden benchmark tests: only what the user wrote. Doctest lines (``>>> f(1)`` followed by
the expected output), call examples (``f(2) ➞ 4``) and ``assert`` lines in the instruction become
test cases; :class:`ragcoder.chains.prompting.instruction.Instruction` reads them.
"""

from __future__ import annotations

import ast

from ragcoder.agent import select
from ragcoder.agent.prelude import instruction_prelude
from ragcoder.agent.result import CheckKind, TestCase
from ragcoder.agent.tasks import Task
from ragcoder.chains.prompting.codegen import Draft
from ragcoder.chains.prompting.instruction import read_instruction
from ragcoder.chains.prompting.test_gen import parse_generated_tests, usable_test


def extract_example_tests(instruction: str) -> str | None:
    """Test source built from doctest examples and assert lines in ``instruction`` (None if none)."""
    cases = read_instruction(instruction).examples
    return "\n".join(cases) + "\n" if cases else None


def _names_defined(instruction: str) -> set[str]:
    """Names the request's own code defines: a test may use them."""
    return set().union(*(names for _, names in instruction_prelude(instruction)))


def hard_checks(task: Task, function: str | None, notes: list[str]) -> tuple[str | None, CheckKind]:
    """The user's tests, else the instruction's examples of ``function``, else none."""
    if task.tests and task.tests.strip():
        return task.tests, "tests"
    found = (extract_example_tests(task.instruction) or "").splitlines()
    if function is not None:  # an example of another name (a typo in the docs) can only raise NameError
        allowed = _names_defined(task.instruction)
        kept = [line for line in found if usable_test(line, function, allowed, max_chars=None)]
        if len(kept) < len(found):
            notes.append(
                f"{len(found) - len(kept)} example(s) in the request do not call {function}: not used"
            )
        found = kept
    if found:
        return "\n".join(found) + "\n", "examples"
    return None, "runs"


def hard_cases(task: Task, source: str | None, check: CheckKind) -> list[TestCase]:
    """``source`` (from :func:`hard_checks`) as the test cases every candidate must pass."""
    if check == "tests" and source:
        return select.user_test_cases(source, task.entry_point)
    if check == "examples" and source:
        return select.assert_cases(source.splitlines(), "example")
    return []


def own_test_cases(
    replies: list[Draft], function: str, instruction: str, known: list[TestCase]
) -> list[TestCase]:
    """The model's tests from its ``replies``: usable, deduplicated, none repeating a ``known`` one."""
    allowed = _names_defined(instruction)
    lines: list[str] = []
    for reply in replies:
        lines += [t for t in parse_generated_tests(reply["reply"], function, allowed) if t not in lines]
    given = {usable_test(k.name, function, allowed, None) or k.name for k in known}  # as parsed, to compare
    return select.assert_cases([line for line in lines if line not in given], "generated")


MAX_VARIANTS = 12  # calls per request: one sandbox request runs them all in milliseconds


def example_variants(examples: list[TestCase], function: str) -> list[select.Probe]:
    """Calls of ``function`` like the examples' but with a list or tuple argument one item shorter
    at either end: inputs of the same kind, which code that is right should not raise on. (Not
    strings: one character shorter, a word, a number or a bit string often stops being one.)"""
    calls: list[str] = []
    for case in examples:
        try:
            tree = ast.parse(case.name)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function
            ):
                continue
            for i, arg in enumerate(node.args):
                try:
                    value = ast.literal_eval(arg)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
                if not isinstance(value, list | tuple) or len(value) < 2:
                    continue
                for shorter in (value[:-1], value[1:]):
                    args = [*node.args[:i], ast.parse(repr(shorter), mode="eval").body, *node.args[i + 1 :]]
                    call = ast.unparse(ast.Call(ast.Name(function, ast.Load()), args, node.keywords))
                    if call not in calls:
                        calls.append(call)
    return [select.Probe(c, f"assert _rc_output({c!r}, lambda: {c})") for c in calls[:MAX_VARIANTS]]


def raised_on(outputs: dict[str, str], variants: list[select.Probe]) -> list[str]:
    """The variant calls the code raised on or hung on, as ``call: what happened``."""
    bad = []
    for probe in variants:
        got = outputs.get(probe.expr, "timeout")
        if got == "timeout" or got.startswith("raised "):
            bad.append(f"{probe.expr}: {got}")
    return bad
