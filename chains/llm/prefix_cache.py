"""Reuse of a prompt's KV cache by the next prompt that starts with the same tokens.

A repair prompt repeats its task's codegen prompt up to the task and its tests (system message,
reference material, the task, the tests: see :mod:`ragcoder.chains.prompting.prompts`), and the next repair repeats
the one before up to the code. Reading that shared prefix again is most of a repair's prefill,
and on a CPU prefill is slow (docs/benchmarks.md, "Local LLM", ``bench/llm_bench.py
--only-repairs``). :class:`PrefixCache` keeps the KV caches of the last few prompts, and
:meth:`PrefixCache.take` hands the next prompt the longest matching one, cut to the shared
prefix, so ``model.generate`` reads only the tokens after it.

Heavy imports stay inside the functions. Caches are only valid for the weights that made them:
:func:`prefix_cache_for` keeps one :class:`PrefixCache` per model object.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MIN_REUSED_TOKENS = 32  # a shorter match (the chat template's first tokens alone) saves nothing
# one left-padded batch's rows (batch_size 8): a batch run's repairs follow its first attempts
MAX_ENTRIES = 8


@dataclass
class _Entry:
    ids: list[int]
    cache: Any  # a transformers DynamicCache holding the keys and values of ``ids``


@dataclass
class PrefixCache:
    """The KV caches of the last ``max_entries`` prompts (and what was generated after them)."""

    max_entries: int = MAX_ENTRIES
    min_tokens: int = MIN_REUSED_TOKENS
    entries: list[_Entry] = field(default_factory=list)

    def take(self, ids: list[int]) -> tuple[Any, int]:
        """The stored cache that shares the longest prefix with ``ids``, cut to that prefix, and
        its length; ``(None, 0)`` when none shares ``min_tokens``.

        The entry is removed: ``generate`` extends the cache it is given in place. At least the
        last token of ``ids`` is left to compute, since its logits pick the first new token.
        """
        best, best_len = None, 0
        for entry in self.entries:
            shared = _common_prefix(entry.ids, ids)
            if shared > best_len:
                best, best_len = entry, shared
        best_len = min(best_len, len(ids) - 1)
        if best is None or best_len < self.min_tokens:
            return None, 0
        self.entries.remove(best)
        cache = best.cache
        cache.crop(best_len - cache.get_seq_length())  # a negative count: the tokens to drop
        return cache, best_len

    def put(self, ids: list[int], cache: Any) -> None:
        """Keep ``cache`` (the keys and values of ``ids``), dropping the oldest entry when full."""
        if len(ids) < self.min_tokens or cache is None or cache.get_seq_length() != len(ids):
            return
        self.entries.append(_Entry(list(ids), cache))
        del self.entries[: -self.max_entries]

    def clear(self) -> None:
        self.entries.clear()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


_CACHES: weakref.WeakKeyDictionary[Any, PrefixCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def prefix_cache_for(model: Any) -> PrefixCache:
    """The one :class:`PrefixCache` of ``model`` (use it under the model's generate lock)."""
    with _CACHES_LOCK:
        return _CACHES.setdefault(model, PrefixCache())


def cache_argument() -> str:
    """The name ``generate`` takes a cache by: ``cache`` from transformers 5.x's rename on,
    ``past_key_values`` before it."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def plain_cache(cache: Any) -> bool:
    """Is ``cache`` a ``DynamicCache`` of full-attention layers only? Those are the ones that can be
    cut and split by row; a sliding-window or recurrent layer keeps state that cannot."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer).__name__ == "DynamicLayer" and getattr(layer, "keys", None) is not None
        for layer in layers
    )


def row_cache(cache: Any, row: int, start: int, end: int) -> Any:
    """A one-row ``DynamicCache`` with positions ``start:end`` of ``row`` of a batch's cache (a
    left-padded row without its padding)."""
    from transformers import DynamicCache

    single = DynamicCache()
    for index, layer in enumerate(cache.layers):
        single.update(
            layer.keys[row : row + 1, :, start:end].clone(),
            layer.values[row : row + 1, :, start:end].clone(),
            index,
        )
    return single


@contextlib.contextmanager
def assisted_from_prefix(model: Any, cache: Any) -> Iterator[None]:
    """Let prompt-lookup (assisted) decoding start from a filled ``cache``.

    transformers 5.24's assisted decoding feeds the whole prompt on its first pass even when the
    cache already holds part of it (greedy and sampled decoding slice it, in ``_prefill``); the
    prefix would then be read twice, at the wrong positions. For the length of one ``generate``
    call this cuts that first pass to the tokens after the cache, as ``_prefill`` does. Use it
    under the model's generate lock.
    """
    prepare = model.prepare_inputs_for_generation
    own = "prepare_inputs_for_generation" in vars(model)  # set on the instance already (a wrapper's)

    def prepare_after_cache(input_ids: Any, next_sequence_length: int | None = None, **kwargs: Any) -> Any:
        if next_sequence_length is None and kwargs.get("is_first_iteration"):
            cached = cache.get_seq_length()
            if 0 < cached < input_ids.shape[1]:
                next_sequence_length = input_ids.shape[1] - cached
        return prepare(input_ids, next_sequence_length=next_sequence_length, **kwargs)

    model.prepare_inputs_for_generation = prepare_after_cache
    try:
        yield
    finally:
        if own:
            model.prepare_inputs_for_generation = prepare
        else:
            del model.prepare_inputs_for_generation  # back to the class's method
