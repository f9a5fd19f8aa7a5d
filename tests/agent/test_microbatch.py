"""Concurrent generations are gathered into one batch() call of the wrapped model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from ragcoder.agent.microbatch import MicroBatchingChatModel

from tests.fakes import ScriptedChatModel


class CountingModel(ScriptedChatModel):
    """Echoes the prompt and records the size of every batch() call."""

    def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
        self.prompts.append(f"batch of {len(inputs)}")
        return [AIMessage(content="echo: " + m[-1].content) for m in inputs]


def test_concurrent_calls_share_one_batch() -> None:
    inner = CountingModel(rules=[])
    model = MicroBatchingChatModel(inner=inner, max_batch=4, window_s=0.5)
    barrier = threading.Barrier(4)

    def ask(i: int) -> str:
        barrier.wait()
        return model.invoke([HumanMessage(content=f"q{i}")]).content

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert answers == [f"echo: q{i}" for i in range(4)]
    assert inner.prompts == ["batch of 4"]


def test_errors_reach_the_caller() -> None:
    class Broken(CountingModel):
        def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
            return [ValueError("model exploded")] * len(inputs)

    model = MicroBatchingChatModel(inner=Broken(rules=[]), window_s=0.01)
    with pytest.raises(ValueError, match="model exploded"):
        model.invoke("hi")
