"""When to retrieve: the gate in front of the retriever (``retrieval = "auto"``, the default).

Docs help when the task needs an API the model may not know (a module, the user's own code) and
hurt when it does not: the model uses what it is shown. Measured on the HumanEval dev split
(docs/results.md, per-row int8 Qwen 1.5B, single shot): 57/82 without the docs against 38/82
with them; HumanEval/0 reached for ``math.isclose(rel_tol=...)`` and HumanEval/21 for
``decimal.Decimal`` because their docs were in the prompt. A cosine threshold did not separate
the two cases (at 0.50, 43 of the 82 prompts still got docs while 10 of 48 API questions lost
their answer), so the gate looks at what the task *is* instead:

- a request in words (no code) that names an API (``json.loads``, "the csv module") gets docs; one
  that names none gets only the user's own indexed code and docs, not the standard library's. The
  same 82 dev tasks asked in words (``eval humaneval --prompt-style words``) passed 68/82 with no
  docs and 47/82 with the stdlib docs the gate used to give them (docs/results.md, session 10);
- code that is a function stub (a signature and a docstring) and refers to nothing beyond
  builtins, ``typing`` and the names it defines itself is self-contained: no docs;
- a stub that imports a module, uses a name it does not define (the user's ``Order`` type, a
  helper from their project), or whose words name an API (``json.loads``, "the csv module") is
  retrieved for.

The rule costs no model call and no index query, and the trace says which way it went and why.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
import typing
from dataclasses import dataclass

from ragcoder.chains.prompting.instruction import code_regions, is_stub_body, parse_fragment

_SELF_CONTAINED_MODULES = frozenset({"typing", "__future__", "collections.abc"})
_KNOWN_NAMES = frozenset(dir(builtins)) | frozenset(typing.__all__) | {"__name__", "__file__", "__doc__"}
_STDLIB = frozenset(m for m in sys.stdlib_module_names if not m.startswith("_"))
_DOTTED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)\b")
_MODULE_WORD = re.compile(r"\b([A-Za-z_]\w*)\s+(?:module|library|package)\b", re.I)
_BACKTICKED = re.compile(r"`([A-Za-z_][\w.]*)`")


@dataclass(frozen=True)
class RetrievalDecision:
    retrieve: bool
    reason: str
    stdlib: bool = True
    """Whether the standard library's docs may be used; False: the user's own code and docs only."""


def decide_retrieval(instruction: str) -> RetrievalDecision:
    """Whether docs should go into the prompt for ``instruction``, and why (one line)."""
    code, words = _split_code(instruction)
    if code is None:
        named = sorted(_named_apis(words))
        if named:
            return RetrievalDecision(True, f"the request names {', '.join(named[:5])}")
        return RetrievalDecision(
            True,
            "a request in words that names no API: your own indexed code and docs only "
            "(the standard library's docs measured as a distraction)",
            stdlib=False,
        )
    tree = parse_fragment(code)
    if tree is None:
        return RetrievalDecision(True, "its code does not parse, so the gate cannot tell what it uses")
    if not _stubs(tree):
        return RetrievalDecision(True, "code to change, not a function stub to complete")
    modules = sorted(_imported_modules(tree) - _SELF_CONTAINED_MODULES)
    if modules:
        return RetrievalDecision(True, f"the stub imports {', '.join(modules)}")
    outside = sorted(_undefined_names(tree))
    if outside:
        return RetrievalDecision(True, f"the stub uses names it does not define: {', '.join(outside[:5])}")
    named = sorted(_named_apis(words + "\n" + "\n".join(_docstrings(tree))))
    if named:
        return RetrievalDecision(True, f"the task names {', '.join(named[:5])}")
    return RetrievalDecision(
        False,
        "a self-contained function stub (builtins and typing only): docs measured as a distraction there",
    )


def _split_code(instruction: str) -> tuple[str | None, str]:
    """(the code, the words around it); code is None when the instruction holds none."""
    regions = code_regions(instruction)
    words = instruction
    for region in regions:
        words = words.replace(region, "")
    return ("\n".join(regions) if regions else None), words


def _stubs(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions with a docstring and no code (imports inside the body allowed, as HumanEval/115 has)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = [s for s in node.body if not isinstance(s, ast.Import | ast.ImportFrom)]
            docstrings = [s for s in body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                          and isinstance(s.value.value, str)]  # fmt: skip
            if docstrings and is_stub_body(body):
                found.append(node)
    return found


def _imported_modules(tree: ast.Module) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def _undefined_names(tree: ast.Module) -> set[str]:
    """Names read somewhere in the code that neither the code, builtins nor typing define."""
    defined: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.alias):
            defined.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
        elif isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
    return used - defined - _KNOWN_NAMES


def _docstrings(tree: ast.Module) -> list[str]:
    nodes = [
        tree,
        *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)),
    ]
    return [doc for node in nodes if (doc := ast.get_docstring(node))]


def _named_apis(text: str) -> set[str]:
    """APIs the words name: ``json.loads``, "the csv module", a backticked name of a module."""
    named = {f"{root}.{attr}" for root, attr in _DOTTED.findall(text) if root in _STDLIB}
    named.update(m.lower() for m in _MODULE_WORD.findall(text) if m.lower() in _STDLIB)
    named.update(name for name in _BACKTICKED.findall(text) if name.split(".")[0] in _STDLIB)
    return named
