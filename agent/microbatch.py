"""Batch the generations of concurrent agent runs: N batch workers, one batched model call.

Each batch worker runs its own generate -> run -> repair loop in a thread. When several of them
ask the model at about the same time, :class:`MicroBatchingChatModel` gathers their prompts
(up to ``max_batch``, waiting at most ``window_s`` for company) and hands them to the wrapped
model's ``batch()`` in one call, which a local model serves with one left-padded generation.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, PrivateAttr

_Request = tuple[list[BaseMessage], tuple[str, ...], dict[str, Any], Future]


class MicroBatchingChatModel(BaseChatModel):
    """Wraps a chat model (or a bound one); concurrent calls share one ``batch()``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: Runnable
    """The model that does the work; its ``batch()`` should generate in one pass."""
    max_batch: int = 8
    """Most prompts in one call (memory grows with it)."""
    window_s: float = 0.05
    """How long the first request waits for others to join its batch."""

    _queue: queue.Queue = PrivateAttr(default_factory=queue.Queue)
    _thread: threading.Thread | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "micro-batching"

    @property
    def model_id(self) -> str:
        return str(getattr(self.inner, "model_id", type(self.inner).__name__))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        future: Future = Future()
        self._ensure_dispatcher()
        self._queue.put((messages, tuple(stop or ()), kwargs, future))
        message = future.result()
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _ensure_dispatcher(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._dispatch, name="ragcoder-microbatch", daemon=True
                )
                self._thread.start()

    def _dispatch(self) -> None:
        while True:
            batch: list[_Request] = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=self.window_s))
                except queue.Empty:
                    break
            for requests, stop in _calls(batch):
                self._run_group(requests, stop)

    def _run_group(self, requests: list[_Request], stop: list[str] | None) -> None:
        kwargs = dict(requests[0][2])
        if stop:
            kwargs["stop"] = stop
        try:
            outputs = self.inner.batch([r[0] for r in requests], return_exceptions=True, **kwargs)
        except Exception as exc:  # the whole call failed: every waiter gets the error
            outputs = [exc] * len(requests)
        for request, output in zip(requests, outputs, strict=True):
            if isinstance(output, BaseException):
                request[3].set_exception(output)
            elif isinstance(output, BaseMessage):
                request[3].set_result(output)
            else:
                request[3].set_result(AIMessage(content=str(output)))


def _calls(batch: list[_Request]) -> list[tuple[list[_Request], list[str] | None]]:
    """The model calls that serve ``batch``: prompts with the same stop and options share one,
    seeded ones when their seeds run on by one (row ``i`` of a call samples with its ``seed + i``,
    so each keeps the draws it would get alone; agent.candidates sends a task's rows so)."""
    groups: dict[tuple[tuple[str, ...], str], list[_Request]] = {}
    for request in batch:
        options = sorted((k, v) for k, v in request[2].items() if k != "seed")
        groups.setdefault((request[1], repr(options)), []).append(request)
    calls: list[tuple[list[_Request], list[str] | None]] = []
    for (stop, _), requests in groups.items():
        unseeded = [r for r in requests if r[2].get("seed") is None]
        if unseeded:
            calls.append((unseeded, list(stop) or None))
        run: list[_Request] = []
        for request in sorted((r for r in requests if r[2].get("seed") is not None), key=_seed):
            if run and _seed(request) != _seed(run[-1]) + 1:
                calls.append((run, list(stop) or None))
                run = []
            run.append(request)
        if run:
            calls.append((run, list(stop) or None))
    return calls


def _seed(request: _Request) -> int:
    return int(request[2]["seed"])
