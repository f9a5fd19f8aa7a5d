"""Prompting: the prompts, reading an instruction, extracting code, the codegen and repair chains.

    from ragcoder.chains.prompting import codegen_chain, repair_chain

Names are imported lazily, like the other chains packages.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "codegen_chain": "ragcoder.chains.prompting.codegen",
    "repair_chain": "ragcoder.chains.prompting.codegen",
    "extract_code": "ragcoder.chains.prompting.extract",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
