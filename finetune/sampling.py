"""A sampling chat model for pass@k with n > 1 samples.

The project's local chat model decodes greedily (the right default for the agent); pass@k needs
n different samples per task, so this wraps the same loaded weights and chat template and calls
``model.generate`` with ``do_sample=True`` (Chen et al. 2021 use T=0.8 for pass@k, k > 1).
"""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

DEFAULT_TEMPERATURE = 0.8  # Chen et al. 2021: best for pass@10..100; pass@1 is best greedy
DEFAULT_TOP_P = 0.95  # the Codex paper's nucleus


class SamplingChatModel(BaseChatModel):
    """Samples from the weights behind a ``chains.llm.LocalChatModel`` (same prompt formatting)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chat: Any
    """The greedy ``LocalChatModel`` whose weights, tokenizer and chat template are reused."""
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_new_tokens: int = 768
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "ragcoder_sampling"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import torch

        prompt = self.chat._to_chat_prompt(messages)
        model = self.chat.llm.pipeline.model
        tokenizer = self.chat.llm.pipeline.tokenizer
        encoded = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
        options: dict[str, Any] = {"max_new_tokens": int(kwargs.get("max_new_tokens") or self.max_new_tokens),
                                   "do_sample": True, "temperature": self.temperature, "top_p": self.top_p}  # fmt: skip
        if stop:
            options.update(stop_strings=list(stop), tokenizer=tokenizer)
        with self._lock, torch.inference_mode():
            output = model.generate(**encoded, **options)
        new_ids = output[0, encoded["input_ids"].shape[1] :].tolist()
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        for s in stop or []:
            if s and s in text:
                text = text[: text.index(s)]
        pad = tokenizer.pad_token_id
        count = len([t for t in new_ids if t != pad]) if pad is not None else len(new_ids)
        usage = {"input_tokens": int(encoded["input_ids"].shape[1]), "output_tokens": count,
                 "total_tokens": int(encoded["input_ids"].shape[1]) + count}  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text, usage_metadata=usage))])


def sampling_model(chat: Any, *, temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P,
                   max_new_tokens: int = 768) -> SamplingChatModel:  # fmt: skip
    return SamplingChatModel(chat=chat, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
