"""The agent as a LangChain Runnable: its input schema, ``as_tool()``, streamed steps, traced runs.

:class:`AgentRunnable` is the base of :class:`ragcoder.agent.loop.CodeAgent`, which supplies the loop
(``events()``); what a LangChain caller gets from here:

- ``input_schema`` is :class:`CodeTaskInput` (instruction, tests, entry_point); invoke also takes
  a plain instruction string or a :class:`~ragcoder.agent.tasks.Task`;
- ``as_tool()``: a tool an agent can call with those arguments; it answers with the verdict and the
  code as text, and hands the whole :class:`AgentResult` back as the ``ToolMessage`` artifact;
- ``stream``/``astream`` yield the loop's steps (:class:`~ragcoder.agent.loop.AgentEvent`: retrieved,
  generated, ran, failed, repairing, and last ``done`` with the result); inside an LCEL chain only
  the result flows on (``transform``), so ``agent | next_step`` still gets an ``AgentResult``;
- every step is also a custom event named ``ragcoder.<kind>`` (``astream_events``: ``on_custom_event``;
  callbacks: ``on_custom_event``), from invoke as well as stream;
- each sandbox run is a child run (``sandbox.run`` or ``sandbox.run_tests``) beside the model calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
    patch_config,
    run_in_executor,
    set_config_context,
    var_child_runnable_config,
)
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field
from ragcoder.agent.result import AgentResult


class AgentEvent(Protocol):
    """A step of the loop (:class:`ragcoder.agent.loop.AgentEvent`)."""

    kind: str
    attempt: int
    data: dict[str, Any]


__all__ = ["EVENT_PREFIX", "AgentRunnable", "CodeTaskInput", "tool_answer", "traced_call"]

EVENT_PREFIX = "ragcoder."
TOOL_NAME = "write_python"
TOOL_DESCRIPTION = (
    "Write Python code for an instruction and check it in a sandbox: runs the given tests (or the "
    "examples in the instruction), repairs the code until it passes or the attempts run out, and "
    "returns the verdict and the final code."
)


class CodeTaskInput(BaseModel):
    """What the agent takes: an instruction, and optionally tests and the function they call."""

    instruction: str = Field(description="What the code should do, in words (a function's spec).")
    tests: str | None = Field(
        default=None,
        description="Python asserts or test_* functions the code must pass; empty: the instruction's "
        "examples are checked, or the code only has to run cleanly.",
    )
    entry_point: str | None = Field(
        default=None,
        description="The function the tests call, when they use HumanEval's check(candidate) form.",
    )


def tool_answer(result: AgentResult) -> str:
    """The result as the text a calling model reads: the verdict, then the final code."""
    attempts = len(result.attempts)
    if result.passed:
        verdict = f"passed ({result.check}) after {attempts} attempt(s)"
    else:
        last = result.attempts[-1] if result.attempts else None
        why = (last.feedback.strip().splitlines() or [""])[0] if last else ""
        verdict = f"failed ({result.stop_reason}) after {attempts} attempt(s)" + (f": {why}" if why else "")
    return f"{verdict}\n```python\n{result.code.rstrip()}\n```\n"


def traced_call(name: str, inputs: dict[str, Any], call: Callable[[], Any]) -> Any:
    """``call()``, recorded as a child run called ``name`` when it happens inside a traced run
    (the agent's stream or invoke); outside one, just called."""
    if var_child_runnable_config.get() is None:
        return call()
    return RunnableLambda(lambda _: call(), name=name).invoke(inputs)


class AgentRunnable(Runnable[Any, AgentResult]):
    """The Runnable surface over a loop that yields steps: see the module docstring."""

    def events(self, input: Any) -> Iterator[AgentEvent]:  # pragma: no cover - the loop supplies it
        raise NotImplementedError

    # -- schemas and tools ------------------------------------------------------------------
    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return CodeTaskInput

    def as_tool(
        self,
        args_schema: type[BaseModel] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        arg_types: dict[str, type] | None = None,
    ) -> BaseTool:
        """A tool taking :class:`CodeTaskInput`'s fields; its text is :func:`tool_answer`, its
        artifact the :class:`AgentResult`."""

        def write(config: RunnableConfig, **fields: Any) -> tuple[str, AgentResult]:
            result = self.invoke(fields, config)
            return tool_answer(result), result

        async def awrite(config: RunnableConfig, **fields: Any) -> tuple[str, AgentResult]:
            result = await self.ainvoke(fields, config)
            return tool_answer(result), result

        return StructuredTool.from_function(
            func=write,
            coroutine=awrite,
            name=name or TOOL_NAME,
            description=description or TOOL_DESCRIPTION,
            args_schema=args_schema or CodeTaskInput,
            response_format="content_and_artifact",
        )

    # -- running ----------------------------------------------------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AgentResult:
        result: AgentResult | None = None
        for event in self.stream(input, config, **kwargs):
            if event.kind == "done":
                result = event.data["result"]
        assert result is not None  # the loop always ends with done
        return result

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[AgentEvent]:  # type: ignore[override]
        """The loop's steps as they happen, in one traced run; the last step is ``done``."""
        config = ensure_config(config)
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None,
            input if isinstance(input, dict) else {"input": input},
            run_type="chain",
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        child_config = patch_config(config, callbacks=run_manager.get_child())
        steps = self.events(input)
        result: AgentResult | None = None
        try:
            with set_config_context(child_config) as context:
                while (event := context.run(next, steps, None)) is not None:
                    payload = {"attempt": event.attempt, **event.data}
                    context.run(
                        dispatch_custom_event, EVENT_PREFIX + event.kind, payload, config=child_config
                    )
                    if event.kind == "done":
                        result = event.data["result"]
                    yield event
        except BaseException as error:  # GeneratorExit too: a consumer that stops early ends the run
            steps.close()
            run_manager.on_chain_error(error)
            raise
        run_manager.on_chain_end(result)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AgentEvent]:  # type: ignore[override]
        """``stream`` on a worker thread, one step at a time (the loop blocks on the model and sandbox)."""
        steps = self.stream(input, config, **kwargs)
        try:
            while (event := await run_in_executor(None, next, steps, None)) is not None:
                yield event
        finally:
            steps.close()

    # Inside a chain (``agent | next_step``) the next step expects the result, not the steps.
    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AgentResult]:
        final: Any = None
        for chunk in input:
            final = _added(final, chunk)
        yield self.invoke(final, config, **kwargs)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AgentResult]:
        final: Any = None
        async for chunk in input:
            final = _added(final, chunk)
        yield await self.ainvoke(final, config, **kwargs)


def _added(final: Any, chunk: Any) -> Any:
    """Input chunks joined as LangChain joins them (streamed text adds up), else the last one."""
    if final is None:
        return chunk
    try:
        return final + chunk
    except TypeError:
        return chunk
