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


def test_seeded_requests_share_a_call_only_when_their_seeds_run_on() -> None:
    # a call seeded s samples row i with s + i: rows 5, 6, 7 from three callers are one call of
    # seed 5 whatever order they arrive in; seed 9 (a gap) and greedy requests get calls of their own
    class SeedRecorder(CountingModel):
        def batch(self, inputs: list[Any], config: Any = None, **kwargs: Any) -> list[Any]:
            self.prompts.append(f"{len(inputs)} from seed {kwargs.get('seed')}")
            return [AIMessage(content=m[-1].content) for m in inputs]

    inner = SeedRecorder(rules=[])
    model = MicroBatchingChatModel(inner=inner, max_batch=5, window_s=0.5)
    asks = [(7, "c"), (5, "a"), (9, "x"), (6, "b"), (None, "g")]
    barrier = threading.Barrier(len(asks))

    def ask(seed_and_text: tuple[int | None, str]) -> str:
        seed, text = seed_and_text
        options = {} if seed is None else {"temperature": 1.0, "seed": seed}
        barrier.wait()
        return model.invoke([HumanMessage(content=text)], **options).content

    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(ask, asks))
    assert answers == ["c", "a", "x", "b", "g"]
    assert sorted(inner.prompts) == ["1 from seed 9", "1 from seed None", "3 from seed 5"]
