"""Fakes that script behaviour (not mocks that assert calls), for fast unit tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Replies by rule: the first (trigger, reply) whose trigger occurs in the prompt wins.

    A trigger of "" always matches, so put it last as the default. Every prompt it saw is kept in
    ``prompts`` so a test can check what the model was told (e.g. that the traceback reached it).
    """

    rules: list[tuple[str, str]]
    sequence: list[str] = Field(default_factory=list)  # when not empty, replies come from it in order first
    prompts: list[str] = Field(default_factory=list)
    options: list[dict[str, Any]] = Field(default_factory=list)  # the per-call options (e.g. temperature)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = "\n".join(str(m.content) for m in messages)
        self.prompts.append(prompt)
        self.options.append(dict(kwargs))
        if self.sequence:
            reply = self.sequence.pop(0)
        else:
            reply = next((r for trigger, r in self.rules if trigger in prompt), "no rule matched")
        usage = {
            "input_tokens": len(prompt.split()),
            "output_tokens": len(reply.split()),
            "total_tokens": len(prompt.split()) + len(reply.split()),
        }
        message = AIMessage(content=reply, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Streams the scripted reply a few characters at a time, like a real model."""
        message = self._generate(messages, stop, None, **kwargs).generations[0].message
        text = str(message.content)
        for start in range(0, len(text), 7):
            piece = text[start : start + 7]
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        usage = AIMessageChunk(content="", usage_metadata=message.usage_metadata)
        yield ChatGenerationChunk(message=usage)


def fenced(code: str, prose: str = "Here is the code:") -> str:
    return f"{prose}\n```python\n{code.strip()}\n```\n"


def scripted(rules: Sequence[tuple[str, str]], sequence: Sequence[str] = ()) -> ScriptedChatModel:
    return ScriptedChatModel(rules=list(rules), sequence=list(sequence), prompts=[])
