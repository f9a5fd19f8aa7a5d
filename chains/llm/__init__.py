"""The local LLM: the model registry and installer, weight loading, the LangChain chat model.

    from ragcoder.chains.llm import load_chat_model
    chat = load_chat_model("qwen2.5-coder-1.5b-instruct")

Names are imported lazily: loading this package does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_chat_model": "ragcoder.chains.llm.chat_model",
    "LocalChatModel": "ragcoder.chains.llm.chat_model",
    "repair_model": "ragcoder.chains.llm.chat_model",
    "resolve_model": "ragcoder.chains.llm.models",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
