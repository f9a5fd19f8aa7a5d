"""Put back what the instruction's own code provides when the model's code leaves it out.

An instruction that shows code (``from typing import List`` above a signature to complete, or a
helper function the answer is meant to call) expects the answer to run with those names defined.
Models often return just the function, so the first run fails with ``NameError: name 'List' is not
defined`` and a repair attempt is spent on an import. :func:`add_missing_prelude` prepends the
instruction's import lines and helper definitions that the code uses but does not define itself.
"""

from __future__ import annotations

import ast
import builtins
import re

from ragcoder.chains.prompting.instruction import code_regions as _code_regions
from ragcoder.chains.prompting.instruction import is_stub as _is_stub
from ragcoder.chains.prompting.instruction import parse_fragment as _parse_fragment

_IMPORT_LINE_RE = re.compile(r"^(?:from\s+[\w.]+\s+import\s+[\w., ()*]+|import\s+[\w., ]+)\s*$", re.M)


def _bound_by_import(node: ast.Import | ast.ImportFrom) -> set[str]:
    return {(alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*"}


def instruction_prelude(instruction: str) -> list[tuple[str, set[str]]]:
    """The instruction's imports and implemented helper definitions, in order, with the names each binds."""
    items: list[tuple[str, set[str]]] = []
    for region in _code_regions(instruction):
        tree = _parse_fragment(region)
        if tree is None:  # prose mixed in: take the import lines alone
            for line in _IMPORT_LINE_RE.findall(region):
                parsed = _parse_fragment(line)
                if parsed is not None and isinstance(parsed.body[0], ast.Import | ast.ImportFrom):
                    items.append((line.strip(), _bound_by_import(parsed.body[0])))
            continue
        source = region if region.endswith("\n") else region + "\n"
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                items.append((ast.unparse(node), _bound_by_import(node)))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not _is_stub(
                node
            ):
                segment = ast.get_source_segment(source, node, padded=False)
                if segment:
                    decorators = "".join(f"@{ast.unparse(d)}\n" for d in node.decorator_list)
                    items.append((decorators + segment, {node.name}))
    return items


def _names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(names the code reads, names it binds anywhere)."""
    used: set[str] = set()
    bound: set[str] = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound |= _bound_by_import(node)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return used, bound


def add_missing_prelude(code: str, instruction: str) -> str:
    """``code`` with the instruction's imports and helpers it uses but lacks prepended (else unchanged).

    A helper that is added may itself need one of the instruction's imports; that is added too.
    """
    if not code.strip():
        return code
    try:
        tree = ast.parse(code)
    except SyntaxError:
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
            helper_tree = _parse_fragment(source)
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
