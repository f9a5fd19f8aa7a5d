"""The LangChain chat model over ONNX Runtime (int4 on CPU): :class:`OrtChatModel`.

The same surface as the torch path's ``LocalChatModel`` (:mod:`ragcoder.chains.llm.chat_model`):
greedy by default, only the new text returned, stop sequences honoured and cut, usage metadata on
invoke, stream and batch, ``.stream()`` as the text is made, ``.batch()`` as one batched
generation, ``temperature``/``top_p``/``seed`` to sample, ``prompt_lookup`` for repairs. And one
thing more: ``n`` samples of one prompt (``model.generate([messages], n=8, temperature=0.8)``)
read the prompt once and decode the samples as one batch.

The weights load once per process and folder (:func:`load_ort_chat_model`); chat models with
other settings share them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict
from ragcoder.chains.llm.generate import GenerationOutput, sampling_from
from ragcoder.chains.llm.prefilled import in_input_order, prefilled, take

DEFAULT_PROMPT_LOOKUP_TOKENS = 10
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def usage_of(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """LangChain ``usage_metadata`` from a :meth:`GenerationOutput.info` dict."""
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


class OrtChatModel(BaseChatModel):
    """A chat model generating with :class:`~ragcoder.chains.llm.onnx_generate.OnnxGenerator`.

    Per-call options (``invoke(..., key=value)`` or ``.bind(key=value)``): ``stop``,
    ``max_new_tokens``, ``prompt_lookup`` (True or a candidate length), ``temperature`` (> 0
    samples) with ``top_p`` and ``seed``, and ``n`` (samples of one prompt, for ``generate``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    generator: Any
    """The loaded :class:`~ragcoder.chains.llm.onnx_generate.OnnxGenerator` (shared weights)."""
    model_id: str = ""
    """Shown as ``response_metadata["model_name"]``."""
    max_new_tokens: int = 512
    """Upper bound on generated tokens per call (override per call with ``max_new_tokens=``)."""
    batch_size: int = 8
    """Most prompts decoded together by one ``batch()`` step."""
    prompt_lookup_num_tokens: int = DEFAULT_PROMPT_LOOKUP_TOKENS
    """Candidate length for prompt-lookup decoding when a call asks for it (``prompt_lookup=True``)."""

    @property
    def _llm_type(self) -> str:
        return "ragcoder_onnx_chat"

    @property
    def engine(self) -> str:
        return "ort"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_model_name"] = kwargs.get("model") or self.model_id
        return params

    def to_prompt(self, messages: list[BaseMessage]) -> str:
        """The chat template applied to ``messages``, ending where the assistant's answer starts."""
        turns = []
        for message in messages:
            role = _ROLES.get(message.type)
            if role is None:
                raise ValueError(f"unsupported message type {message.type!r} for a local chat model")
            turns.append({"role": role, "content": message.content})
        return self.generator.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        lookup = kwargs.get("prompt_lookup")
        if lookup is True:
            lookup = self.prompt_lookup_num_tokens
        return {
            "max_new_tokens": int(kwargs.get("max_new_tokens") or self.max_new_tokens),
            "sampling": sampling_from(kwargs),
            "lookup": int(lookup) if lookup else None,
        }

    def _result(self, output: GenerationOutput) -> ChatGeneration:
        info = output.info()
        message = AIMessage(
            content=output.text,
            usage_metadata=usage_of(info),
            response_metadata={"finish_reason": output.finish_reason, "model_name": self.model_id},
        )
        return ChatGeneration(message=message, generation_info=info)

    def generate_prompts(
        self, prompts: list[str], stop: list[str] | None = None, **kwargs: Any
    ) -> list[GenerationOutput]:
        """Completions of chat-formatted prompts, ``batch_size`` at a time (one by one with lookup)."""
        options = self._options(kwargs)
        step = 1 if options["lookup"] else max(1, self.batch_size)
        outputs: list[GenerationOutput] = []
        sampling = options.pop("sampling")
        for start in range(0, len(prompts), step):
            row_sampling = sampling.from_row(start) if sampling else None  # row i samples with seed + i
            outputs += self.generator.generate(
                prompts[start : start + step], stop=stop or [], sampling=row_sampling, **options
            )
        return outputs

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = self.to_prompt(messages)
        samples = int(kwargs.get("n") or 1)
        if samples == 1 and (done := take((prompt, tuple(stop or ())))) is not None:
            return done
        outputs = self.generator.generate([prompt], stop=stop or [], samples=samples, **self._options(kwargs))
        return ChatResult(generations=[self._result(o) for o in outputs])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt = self.to_prompt(messages)
        for piece in self.generator.stream(prompt, stop=stop or [], **self._options(kwargs)):
            if isinstance(piece, GenerationOutput):  # the last item: usage and finish reason
                info = piece.info()
                message = AIMessageChunk(
                    content="",
                    usage_metadata=usage_of(info),
                    response_metadata={"finish_reason": piece.finish_reason, "model_name": self.model_id},
                    chunk_position="last",
                )
                yield ChatGenerationChunk(message=message, generation_info=info)
                return
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Generate all prompts in batches first, then hand out results through LangChain's own
        ``batch`` (callbacks, tracing, config), whose per-input ``_generate`` picks them up."""
        if len(inputs) < 2:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        stop = kwargs.get("stop")
        try:
            prompts = [self.to_prompt(self._convert_input(i).to_messages()) for i in inputs]
            outputs = self.generate_prompts(prompts, stop, **{k: v for k, v in kwargs.items() if k != "stop"})
        except Exception:
            prompts, outputs = [], []  # fall back: each input runs (and fails) on its own
        results = [
            ((prompt, tuple(stop or ())), ChatResult(generations=[self._result(output)]))
            for prompt, output in zip(prompts, outputs, strict=True)
        ]
        with prefilled(results):
            configs = in_input_order(config, len(inputs))
            return super().batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)


_LOCK = threading.RLock()
_GENERATORS: dict[str, Any] = {}
_CHATS: dict[tuple, OrtChatModel] = {}
LOAD_SECONDS: dict[str, float] = {}


def load_generator(folder: str | Path) -> Any:
    """The :class:`OnnxGenerator` of an ONNX model folder, loaded once per process."""
    from ragcoder.chains.llm.onnx_decoder import OnnxDecoder
    from ragcoder.chains.llm.onnx_generate import OnnxGenerator
    from transformers import AutoTokenizer

    key = str(Path(folder).resolve())
    with _LOCK:
        if key not in _GENERATORS:
            started = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(key)
            _GENERATORS[key] = OnnxGenerator(OnnxDecoder(key), tokenizer)
            LOAD_SECONDS[key] = time.perf_counter() - started
        return _GENERATORS[key]


def load_ort_chat_model(
    folder: str | Path, *, model_id: str = "", max_new_tokens: int = 512, batch_size: int = 8
) -> OrtChatModel:
    """The chat model of an ONNX model folder (made by ``ragcoder models install``); the same
    arguments return the same object, and all of them share the loaded weights."""
    generator = load_generator(folder)
    key = (id(generator), model_id, max_new_tokens, batch_size)
    with _LOCK:
        if key not in _CHATS:
            _CHATS[key] = OrtChatModel(
                generator=generator,
                model_id=model_id or Path(folder).name,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
        return _CHATS[key]


def clear_ort_cache() -> None:
    """Forget every loaded ONNX model (tests; freeing memory)."""
    with _LOCK:
        _CHATS.clear()
        _GENERATORS.clear()
