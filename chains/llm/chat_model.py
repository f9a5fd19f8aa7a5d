"""The local chat model: an HF causal LM behind LangChain's ``ChatHuggingFace`` interface.

``load_chat_model()`` loads a model once per process (int8 dynamic quantization on CPU, bf16 on
CUDA, optional LoRA adapter merged on load) and returns a :class:`LocalChatModel`, a
``ChatHuggingFace`` over a :class:`LocalPipelineLLM` (a ``HuggingFacePipeline``). The pipeline's
stock generate path ignores stop sequences, gives no token counts and loops prompt by prompt, so
generation calls ``model.generate`` directly; what is added on top of the stock classes:

- any LangChain history (tool calls, tool results) rendered by the model's chat template, and
  ``bind_tools``/``with_structured_output``: :mod:`ragcoder.chains.llm.tool_calls` and
  :mod:`ragcoder.chains.llm.chat_api`, shared with any other engine;
- greedy decoding, only the new text returned, stop sequences honoured (and cut from the text);
- ``AIMessage.usage_metadata`` (input/output/total tokens) on invoke, stream and batch;
- ``.stream()`` yields text as it is generated, and ends with a chunk carrying the usage;
- ``.batch()`` runs one left-padded ``generate`` for up to ``batch_size`` prompts; sampled with
  ``seed=s``, row ``i`` draws as ``invoke(..., seed=s + i)`` does (n copies of a prompt: n samples);
- prompt-lookup decoding per call (``model.bind(prompt_lookup=True)`` or :func:`repair_model`):
  faster when the answer copies the prompt (repairs), same greedy output. A ``batch()`` with lookup
  runs its prompts one at a time: for repairs that beats one batched generation (llm_bench 3b).

Under int8 (one activation scale per token, ``ragcoder.chains.llm.int8_linear``) each linear layer is exact
per row, but the fp32 attention of a multi-token pass (a batch, prompt lookup's verify step) sums
in another order, and int8 rounding can amplify that last-bit difference into another greedy pick.
So a batched or prompt-lookup answer can differ from the one-prompt answer. In fp32 that takes a
near tie (tested identical on the tests' model; 1 of 2 repair answers of SmolLM2 differed, llm_bench).
A prompt continued from a stored prefix (:mod:`ragcoder.chains.llm.prefix_cache`) is read in two
pieces, with the same effect: under int8, SmolLM2's sampled answers to one prompt differed after
a few tokens in 3 of 6 rows (logits off by 3-5 from there; exact with ``quantize="none"``).

Loading the weights (int8 from the installed model's int8 file, bf16, fp32, LoRA):
:mod:`ragcoder.chains.llm.loading`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
)
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_huggingface import ChatHuggingFace
from pydantic import ConfigDict
from ragcoder.chains.llm.chat_api import LocalChatFeatures
from ragcoder.chains.llm.convert import make_tiny_random_model
from ragcoder.chains.llm.cpu_threads import set_torch_threads
from ragcoder.chains.llm.loading import INT8_MIN_PARAMS, LoadedModel, Quantize, load_weights, pick_device
from ragcoder.chains.llm.models import DEFAULT_MODEL, resolve_model
from ragcoder.chains.llm.pipeline_llm import DEFAULT_PROMPT_LOOKUP_TOKENS, LocalPipelineLLM
from ragcoder.chains.llm.prefilled import in_input_order, prefilled, take
from ragcoder.chains.llm.tool_calls import ChatTurn, chat_turn, chunk_of

# OpenMP threads that spin while waiting starve each other when other processes share the CPU
# (docs/benchmarks.md). Only effective if torch is not imported yet; the CLI sets it before any
# import. Override by setting it yourself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = [
    "INT8_MIN_PARAMS",
    "LoadedModel",
    "LocalChatModel",
    "LocalPipelineLLM",
    "clear_model_cache",
    "load_chat_model",
    "make_tiny_random_model",
    "repair_model",
]


def _usage(info: dict[str, Any] | None) -> dict[str, Any] | None:
    if not info or "input_tokens" not in info:
        return None
    usage: dict[str, Any] = {
        "input_tokens": info["input_tokens"],
        "output_tokens": info["output_tokens"],
        "total_tokens": info["input_tokens"] + info["output_tokens"],
    }
    if info.get("cached_tokens"):
        usage["input_token_details"] = {"cache_read": info["cached_tokens"]}
    return usage


class LocalChatModel(LocalChatFeatures, ChatHuggingFace):
    """``ChatHuggingFace`` over :class:`LocalPipelineLLM`: tools, structured output, usage, batching.

    Any LangChain history works (tool calls and ``ToolMessage`` results included): the prompt comes
    from the model's chat template through :func:`ragcoder.chains.llm.tool_calls.chat_turn`, and
    ``bind_tools``/``with_structured_output`` come from :class:`LocalChatFeatures`.

    Model-level fields ``max_tokens``, ``temperature`` (> 0 samples instead of decoding greedily),
    ``top_p``, ``seed`` and ``stop`` are the defaults of every call; per call (``invoke(..., key=value)``
    or ``.bind(key=value)``) they can be overridden, along with ``max_new_tokens`` (an alias of
    ``max_tokens``) and ``prompt_lookup`` (True or a candidate length).
    """

    model_config = ConfigDict(populate_by_name=True)  # stop=[...] as well as stop_sequences=[...]

    @property
    def _llm_type(self) -> str:
        return "ragcoder_local_chat"

    def _to_chat_prompt(self, messages: list[BaseMessage]) -> str:
        return chat_turn(self.tokenizer, messages).prompt

    def _turn(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatTurn:
        """The rendered prompt; takes the tool and JSON options out of ``kwargs``."""
        return chat_turn(
            self.tokenizer,
            messages,
            tools=kwargs.pop("tools", None),
            tool_choice=kwargs.pop("tool_choice", None),
            response_format=kwargs.pop("response_format", None),
        )

    def _options(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[str] | None, dict[str, Any]]:
        """Stop sequences and generation options: this call's, else the model's fields."""
        if stop is None:
            stop = [self.stop] if isinstance(self.stop, str) else self.stop
        options = {k: v for k, v in kwargs.items() if k in ("prompt_lookup", "temperature", "top_p", "seed")}
        max_new = kwargs.get("max_new_tokens") or kwargs.get("max_tokens") or self.max_tokens
        if max_new:
            options["max_new_tokens"] = int(max_new)
        for name in ("temperature", "top_p", "seed"):
            if name not in options and getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return stop, options

    def _result(self, turn: ChatTurn, output_text: str, info: dict[str, Any]) -> ChatGeneration:
        message = turn.message(
            turn.prefill + output_text,
            usage_metadata=_usage(info),
            response_metadata={"finish_reason": info.get("finish_reason"), "model_name": self.model_id},
        )
        return ChatGeneration(message=message, generation_info=info)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        stream: bool | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        turn = self._turn(messages, kwargs)
        stop, options = self._options(stop, kwargs)
        prompt = turn.prompt + turn.prefill
        ready = take((prompt, tuple(stop or ())))
        if ready is not None:
            return ready
        output = self.llm.generate_texts([prompt], stop, **options)[0]
        return ChatResult(generations=[self._result(turn, output.text, output.info())])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        stream_usage: bool | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        turn = self._turn(messages, kwargs)
        stop, options = self._options(stop, kwargs)
        reply = turn.reply_parser()

        def chunks(pieces: list) -> Iterator[ChatGenerationChunk]:
            for piece in pieces:
                generation = ChatGenerationChunk(message=chunk_of(piece))
                if run_manager and isinstance(piece, str):
                    run_manager.on_llm_new_token(piece, chunk=generation)
                yield generation

        yield from chunks(reply.feed(turn.prefill))
        for chunk in self.llm._stream(turn.prompt + turn.prefill, stop=stop, **options):
            info = chunk.generation_info
            if not info:
                yield from chunks(reply.feed(chunk.text))
                continue
            yield from chunks(reply.flush())  # the final chunk: usage and finish reason
            message = AIMessageChunk(
                content="",
                usage_metadata=_usage(info),
                response_metadata={"finish_reason": info.get("finish_reason"), "model_name": self.model_id},
                chunk_position="last",
            )
            yield ChatGenerationChunk(message=message, generation_info=info)
            return

    # ChatHuggingFace's async paths refuse a pipeline; LangChain's stock ones run the sync code in a thread.
    _agenerate = BaseChatModel._agenerate
    _astream = BaseChatModel._astream

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Generate all prompts in left-padded batches, then hand out results through the normal path.

        Callbacks, tracing and config handling stay LangChain's own (``super().batch``); each
        per-input ``_generate`` picks up its own precomputed row (:mod:`ragcoder.chains.llm.prefilled`).
        Sampled with ``seed=s``, input ``i`` is what ``invoke(..., seed=s + i)`` gives.
        """
        if len(inputs) < 2:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        try:
            turns = [self._turn(self._convert_input(i).to_messages(), dict(kwargs)) for i in inputs]
            stop, options = self._options(
                kwargs.get("stop"), {k: v for k, v in kwargs.items() if k != "stop"}
            )
            prompts = [t.prompt + t.prefill for t in turns]
            outputs = self.llm.generate_texts(prompts, stop, **options)
        except Exception:
            turns, prompts, outputs = [], [], []  # fall back: each input runs (and fails) on its own
        results = [
            ((prompt, tuple(stop or ())), ChatResult(generations=[self._result(turn, out.text, out.info())]))
            for turn, prompt, out in zip(turns, prompts, outputs, strict=True)
        ]
        with prefilled(results):
            configs = in_input_order(config, len(inputs))
            return super().batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)


_CACHE_LOCK = threading.RLock()
_LOADED: dict[tuple, LoadedModel] = {}
_CHATS: dict[tuple, LocalChatModel] = {}


def clear_model_cache() -> None:
    """Forget every loaded model (tests; freeing memory)."""
    with _CACHE_LOCK:
        _CHATS.clear()
        _LOADED.clear()


def load_model_weights(
    spec: str | Path = DEFAULT_MODEL,
    *,
    adapter: str | Path | None = None,
    quantize: Quantize = "auto",
    device: str = "auto",
) -> LoadedModel:
    """Load (once per process) the weights a spec points to; shared by every chat model on them."""
    if quantize not in ("auto", "int8", "none"):
        raise ValueError(f"quantize must be 'auto', 'int8' or 'none', not {quantize!r}")
    resolved = resolve_model(spec)
    adapter_path = str(Path(adapter).expanduser().resolve()) if adapter else None
    if adapter_path and not (Path(adapter_path) / "adapter_config.json").is_file():
        from ragcoder.errors import ModelNotInstalled

        raise ModelNotInstalled(
            f"LoRA adapter folder {adapter!r} has no adapter_config.json",
            hint="pass a folder written by peft's save_pretrained",
        )
    device = pick_device(device)
    key = (str(resolved.load_dir), resolved.gguf_file, adapter_path, quantize, device)
    with _CACHE_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_weights(resolved, adapter_path, quantize, device)
            if device == "cpu":  # the model's own count, the same in every mode (cpu_threads.py)
                set_torch_threads(_LOADED[key].model.config)
        return _LOADED[key]


def load_chat_model(
    spec: str | Path = DEFAULT_MODEL,
    *,
    adapter: str | Path | None = None,
    quantize: Quantize = "auto",
    max_new_tokens: int = 512,
    device: str = "auto",
    batch_size: int = 8,
) -> LocalChatModel:
    """The chat model for ``spec`` (a known name, HF folder, .gguf file or cached HF id).

    Loaded once per process and shared: the same arguments return the same object, and
    different ``max_new_tokens``/``batch_size`` share the loaded weights. ``quantize="auto"``
    means int8 dynamic on CPU and none (bf16) on CUDA. Raises ``ModelNotInstalled`` /
    ``UnknownModel`` (see :mod:`ragcoder.errors`) when the spec does not point at a model.
    """
    loaded = load_model_weights(spec, adapter=adapter, quantize=quantize, device=device)
    key = (id(loaded), max_new_tokens, batch_size)
    with _CACHE_LOCK:
        if key not in _CHATS:
            if loaded.pipeline is None:
                loaded.pipeline = _make_pipeline(loaded)
            llm = LocalPipelineLLM(
                pipeline=loaded.pipeline,
                model_id=loaded.resolved.name,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                pipeline_kwargs={"max_new_tokens": max_new_tokens, "return_full_text": False},
            )
            _CHATS[key] = LocalChatModel(llm=llm, tokenizer=loaded.tokenizer, model_id=loaded.resolved.name)
        return _CHATS[key]


def _make_pipeline(loaded: LoadedModel) -> Any:
    from transformers import pipeline

    return pipeline(
        "text-generation",
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        return_full_text=False,
    )


def repair_model(chat: LocalChatModel, lookup_tokens: int = DEFAULT_PROMPT_LOOKUP_TOKENS) -> Runnable:
    """``chat`` with prompt-lookup decoding on: for prompts whose answer copies the prompt (repairs)."""
    return chat.bind(prompt_lookup=lookup_tokens)
