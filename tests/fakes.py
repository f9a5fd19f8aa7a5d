"""Fakes that script behaviour (not mocks that assert calls), for fast unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Replies by rule: the first (trigger, reply) whose trigger occurs in the prompt wins.

    A trigger of "" always matches, so put it last as the default. Every prompt it saw is kept in
    ``prompts`` so a test can check what the model was told (e.g. that the traceback reached it).
    """

    rules: list[tuple[str, str]]
    sequence: list[str] = Field(default_factory=list)  # when not empty, replies come from it in order first
    prompts: list[str] = Field(default_factory=list)

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


def fenced(code: str, prose: str = "Here is the code:") -> str:
    return f"{prose}\n```python\n{code.strip()}\n```\n"


def scripted(rules: Sequence[tuple[str, str]], sequence: Sequence[str] = ()) -> ScriptedChatModel:
    return ScriptedChatModel(rules=list(rules), sequence=list(sequence), prompts=[])
