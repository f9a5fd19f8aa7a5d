"""Put back what the instruction's own code provides when the model's code leaves it out.

An instruction that shows code (``from typing import List`` above a signature to complete, or a
helper function the answer is meant to call) expects the answer to run with those names defined.
Models often return just the function, so the first run fails with ``NameError: name 'List' is not
defined`` and a repair attempt is spent on an import. :func:`add_missing_prelude` prepends the
instruction's import lines and helper definitions that the code uses but does not define itself.
"""

from __future__ import annotations

import ast

from ragcoder.chains.prompting.instruction import (
    BUILTIN_NAMES,
    names_used_and_bound,
    parse_fragment,
    parse_or_none,
    read_instruction,
)


def instruction_prelude(instruction: str) -> list[tuple[str, set[str]]]:
    """The instruction's imports and implemented helper definitions, in order, with the names each binds."""
    return [(item.source, set(item.names)) for item in read_instruction(instruction).provided]


def _names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names the code reads, names it binds anywhere, builtins included)."""
    used, bound = names_used_and_bound(tree)
    return used, bound | BUILTIN_NAMES


def add_missing_prelude(code: str, instruction: str) -> str:
    """``code`` with the instruction's imports and helpers it uses but lacks prepended (else unchanged).

    A helper that is added may itself need one of the instruction's imports; that is added too.
    """
    if not code.strip():
        return code
    tree = parse_or_none(code)
    if tree is None:
        return code
    used, bound = _names(tree)
    missing = used - bound
    if not missing:
        return code
    available = instruction_prelude(instruction)
    needed: list[str] = []
    while missing:
        added = [(s, names) for s, names in available if names & missing and s not in needed]
        if not added:
            break
        for source, names in added:
            needed.append(source)
            bound |= names
            missing -= names
            helper_tree = parse_fragment(source)
            if helper_tree is not None:
                helper_used, helper_bound = _names(helper_tree)
                missing |= helper_used - helper_bound - bound
    if not needed:
        return code
    order = [s for s, _ in available]
    needed.sort(key=order.index)
    imports = [s for s in needed if s.startswith(("import ", "from "))]
    helpers = [s for s in needed if s not in imports]
    parts = ["\n".join(imports)] if imports else []
    parts += helpers
    return "\n\n\n".join(parts) + "\n\n\n" + code.lstrip("\n")
