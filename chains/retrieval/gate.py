"""When to retrieve: the gate in front of the retriever (``retrieval = "auto"``, the default).

Docs help when the task needs an API the model may not know (a module, the user's own code) and
hurt when it does not: the model uses what it is shown (e.g. ``math.isclose(rel_tol=...)`` where
the task asks for an absolute distance, because its docs were in the prompt). On HumanEval,
stdlib docs in every prompt cost many tasks, and a cosine threshold did not separate the prompts
that need docs from those that do not (docs/results.md, "Session 5: retrieval on vs off", with its
``ragcoder eval humaneval`` command), so the gate looks at what the task *is* instead:

- a request in words (no code) that names an API (``json.loads``, "the csv module") gets docs; one
  that names none gets only the user's own indexed code and docs, not the standard library's,
  which cost such requests tasks too (docs/results.md, "Session 10", ``eval humaneval
  --prompt-style words``);
- code that is a function stub (a signature and a docstring) and refers to nothing beyond
  builtins, ``typing`` and the names it defines itself is self-contained: no docs;
- a stub that imports a module, uses a name it does not define (the user's ``Order`` type, a
  helper from their project), or whose words name an API (``json.loads``, "the csv module") is
  retrieved for.

The rule costs no model call and no index query, and the trace says which way it went and why.
"""

from __future__ import annotations

import builtins
import re
import sys
import typing
from dataclasses import dataclass

from ragcoder.chains.prompting.instruction import read_instruction

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
    read = read_instruction(instruction)
    if read.code is None:
        named = sorted(_named_apis(read.words))
        if named:
            return RetrievalDecision(True, f"the request names {', '.join(named[:5])}")
        return RetrievalDecision(
            True,
            "a request in words that names no API: your own indexed code and docs only "
            "(the standard library's docs measured as a distraction)",
            stdlib=False,
        )
    if read.tree is None:
        return RetrievalDecision(True, "its code does not parse, so the gate cannot tell what it uses")
    if not read.stubs:
        return RetrievalDecision(True, "code to change, not a function stub to complete")
    modules = sorted(read.imported_modules - _SELF_CONTAINED_MODULES)
    if modules:
        return RetrievalDecision(True, f"the stub imports {', '.join(modules)}")
    outside = sorted(read.undefined_names - _KNOWN_NAMES)
    if outside:
        return RetrievalDecision(True, f"the stub uses names it does not define: {', '.join(outside[:5])}")
    named = sorted(_named_apis(read.words + "\n" + "\n".join(read.docstrings)))
    if named:
        return RetrievalDecision(True, f"the task names {', '.join(named[:5])}")
    return RetrievalDecision(
        False,
        "a self-contained function stub (builtins and typing only): docs measured as a distraction there",
    )


def _named_apis(text: str) -> set[str]:
    """APIs the words name: ``json.loads``, "the csv module", a backticked name of a module."""
    named = {f"{root}.{attr}" for root, attr in _DOTTED.findall(text) if root in _STDLIB}
    named.update(m.lower() for m in _MODULE_WORD.findall(text) if m.lower() in _STDLIB)
    named.update(name for name in _BACKTICKED.findall(text) if name.split(".")[0] in _STDLIB)
    return named
