"""Results of one batched generation, handed to LangChain's per-input calls in input order.

A local engine's ``batch()`` generates every prompt in one pass, then lets LangChain's own
``batch`` (callbacks, tracing, config) call ``_generate`` once per input, which picks its result
up here. Two things make that safe: the store belongs to one ``batch()`` call (a context variable,
which LangChain's executor copies into its threads, so concurrent batches never see each other's
results), and the inputs are handed out in order, one at a time (each pick-up is instant), so
identical prompts (n samples of one prompt) each get their own row instead of one shared answer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list

_CURRENT: ContextVar[dict[Hashable, deque] | None] = ContextVar("ragcoder_prefilled", default=None)


@contextmanager
def prefilled(results: Iterable[tuple[Hashable, Any]]) -> Iterator[None]:
    """Within the block, :func:`take` hands out ``results`` (key, result), first in first out per key."""
    store: dict[Hashable, deque] = {}
    for key, result in results:
        store.setdefault(key, deque()).append(result)
    token = _CURRENT.set(store)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def take(key: Hashable) -> Any | None:
    """The next stored result for ``key`` in this batch, or None (generate it now)."""
    store = _CURRENT.get()
    queue = store.get(key) if store else None
    return queue.popleft() if queue else None


def in_input_order(config: RunnableConfig | list[RunnableConfig] | None, count: int) -> list[RunnableConfig]:
    """``config`` for each of ``count`` inputs, run one at a time in order (results are ready)."""
    return [{**c, "max_concurrency": 1} for c in get_config_list(config, count)]
