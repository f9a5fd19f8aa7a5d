"""The local model's LangChain LLM: a ``HuggingFacePipeline`` whose generation honours stop
sequences, counts tokens, batches for real and samples each row from its own seed.

The stock pipeline path ignores stop sequences, gives no token counts and loops prompt by prompt,
so generation calls ``model.generate`` directly (:mod:`ragcoder.chains.llm.generate`).
:class:`ragcoder.chains.llm.chat_model.LocalChatModel` is the chat model over it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_huggingface import HuggingFacePipeline
from ragcoder.chains.llm.generate import (
    GenerationOutput,
    Sampling,
    generate_batch,
    sampling_from,
    stream_generate,
)
from ragcoder.chains.llm.prefix_cache import PrefixCache, prefix_cache_for

_LOCKS_LOCK = threading.Lock()
_GENERATE_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()

DEFAULT_PROMPT_LOOKUP_TOKENS = 10


class LocalPipelineLLM(HuggingFacePipeline):
    """``HuggingFacePipeline`` whose generation honours stops, counts tokens and batches for real."""

    max_new_tokens: int = 512
    """Upper bound on generated tokens per call (override per call with ``max_new_tokens=``)."""
    prompt_lookup_num_tokens: int = DEFAULT_PROMPT_LOOKUP_TOKENS
    """Candidate length for prompt-lookup decoding when a call asks for it (``prompt_lookup=True``)."""
    reuse_prefix: bool = True
    """Start each prompt from the stored keys and values of the longest prefix it shares with a recent
    prompt (a repair and its task's first attempt): :mod:`ragcoder.chains.llm.prefix_cache`."""

    @property
    def _llm_type(self) -> str:
        return "ragcoder_local_pipeline"

    @property
    def _lock(self) -> threading.Lock:
        """One generation at a time per model (chat models with other settings share the weights)."""
        with _LOCKS_LOCK:
            return _GENERATE_LOCKS.setdefault(self.pipeline.model, threading.Lock())

    @property
    def _prefix_cache(self) -> PrefixCache | None:
        return prefix_cache_for(self.pipeline.model) if self.reuse_prefix else None

    def _gen_options(self, kwargs: dict[str, Any]) -> tuple[int, int | None, Sampling | None]:
        max_new = int(kwargs.get("max_new_tokens") or self.max_new_tokens)
        lookup = kwargs.get("prompt_lookup")
        if lookup is True:
            lookup = self.prompt_lookup_num_tokens
        return max_new, (int(lookup) if lookup else None), sampling_from(kwargs)

    def generate_texts(
        self, prompts: Sequence[str], stop: list[str] | None = None, **kwargs: Any
    ) -> list[GenerationOutput]:
        """Completions of ready-made prompts (greedy unless ``temperature``), ``batch_size`` at a time."""
        max_new, lookup, sampling = self._gen_options(kwargs)
        # prompt lookup works one prompt at a time, and for repairs that beats one batch of them
        # (`bench/llm_bench.py` part 3b, docs/benchmarks.md)
        step = 1 if lookup else max(1, self.batch_size)
        outputs: list[GenerationOutput] = []
        for start in range(0, len(prompts), step):
            with self._lock:
                outputs += generate_batch(
                    self.pipeline.model,
                    self.pipeline.tokenizer,
                    list(prompts[start : start + step]),
                    stop=stop or [],
                    max_new_tokens=max_new,
                    prompt_lookup_num_tokens=lookup,
                    sampling=sampling.from_row(start) if sampling else None,
                    prefix_cache=self._prefix_cache,
                )
        return outputs

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        outputs = self.generate_texts(prompts, stop, **kwargs)
        return LLMResult(generations=[[Generation(text=o.text, generation_info=o.info())] for o in outputs])

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        max_new, lookup, sampling = self._gen_options(kwargs)
        with self._lock:
            for piece in stream_generate(
                self.pipeline.model,
                self.pipeline.tokenizer,
                prompt,
                stop=stop or [],
                max_new_tokens=max_new,
                prompt_lookup_num_tokens=lookup,
                sampling=sampling,
                prefix_cache=self._prefix_cache,
            ):
                if isinstance(piece, GenerationOutput):  # the last item: usage and finish reason
                    yield GenerationChunk(text="", generation_info=piece.info())
                    return
                chunk = GenerationChunk(text=piece)
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
