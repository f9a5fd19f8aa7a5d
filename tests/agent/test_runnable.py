"""CodeAgent as a LangChain Runnable: input schema, as_tool, streamed steps, traced sandbox runs.

A scripted model (broken code first, fixed once the error reaches its prompt) with the trusted
runner for speed; the real default model in the Docker sandbox at the end (slow).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from ragcoder.agent import CodeAgent
from ragcoder.agent.result import AgentResult
from ragcoder.agent.runnable import CodeTaskInput

from tests.fakes import fenced, scripted

BROKEN = "def mean(xs):\n    return sum(xs) / len(xs)\n"
FIXED = "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n"
TESTS = "assert mean([1, 2, 3]) == 2\nassert mean([]) == 0.0\n"
TASK = {"instruction": "Write mean(xs); 0.0 for an empty list.", "tests": TESTS}
STEPS = [
    "retrieved",
    "generated",
    "ran",
    "selected",
    "failed",
    "repairing",
    "generated",
    "ran",
    "selected",
    "done",
]


@pytest.fixture
def agent(trusted_sandbox) -> CodeAgent:
    model = scripted([("ZeroDivisionError", fenced(FIXED)), ("", fenced(BROKEN))])
    return CodeAgent(model, trusted_sandbox, max_attempts=3, samples=1)  # one candidate a round


class Recorder(BaseCallbackHandler):
    """Keeps the custom events and the runs started, with their parents."""

    def __init__(self) -> None:
        self.custom: list[tuple[str, dict[str, Any]]] = []
        self.chains: dict[Any, tuple[str, Any]] = {}

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.custom.append((name, data))

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None, **kw: Any
    ):
        self.chains[run_id] = (kw.get("name") or "", parent_run_id)


def test_the_input_schema_names_instruction_tests_and_entry_point(agent: CodeAgent) -> None:
    schema = agent.get_input_schema().model_json_schema()
    assert set(schema["properties"]) == {"instruction", "tests", "entry_point"}
    assert schema["required"] == ["instruction"]
    assert agent.input_schema is CodeTaskInput


def test_as_tool_takes_the_task_fields_and_answers_with_verdict_and_code(agent: CodeAgent) -> None:
    tool = agent.as_tool()
    assert tool.name == "write_python" and set(tool.args) == {"instruction", "tests", "entry_point"}
    text = tool.invoke(TASK)
    assert text.startswith("passed (tests) after 2 attempt(s)") and FIXED.strip() in text
    # called by an agent (a ToolCall), the whole result comes back as the artifact
    message = tool.invoke({"type": "tool_call", "name": "write_python", "args": TASK, "id": "c1"})
    assert isinstance(message, ToolMessage) and isinstance(message.artifact, AgentResult)
    assert message.artifact.passed and message.artifact.code == FIXED


def test_a_tool_calling_agent_uses_the_code_agent_as_its_tool(agent: CodeAgent) -> None:
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class Caller(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

    call = {"name": "write_python", "args": TASK, "id": "c1"}
    caller = Caller(messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="done")]))
    state = create_agent(caller, tools=[agent.as_tool()]).invoke({"messages": [("user", "mean please")]})
    tool_message = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert tool_message.content.startswith("passed") and "if xs else 0.0" in tool_message.content


def test_stream_yields_the_loops_steps_and_ends_with_the_result(agent: CodeAgent) -> None:
    events = list(agent.stream(TASK))
    assert [e.kind for e in events] == STEPS
    assert [e.attempt for e in events if e.kind == "ran"] == [1, 2]
    assert events[-1].data["result"].passed and events[-1].data["result"].code == FIXED


def test_every_step_is_a_custom_event_and_sandbox_runs_are_child_runs(agent: CodeAgent) -> None:
    recorder = Recorder()
    result = agent.invoke(TASK, {"callbacks": [recorder]})
    assert result.passed
    assert [name for name, _ in recorder.custom] == [f"ragcoder.{kind}" for kind in STEPS]
    failed = dict(recorder.custom)["ragcoder.failed"]
    assert failed["attempt"] == 1 and "assert mean([]) == 0.0" in failed["feedback"]
    root = next(run_id for run_id, (name, parent) in recorder.chains.items() if parent is None)
    assert recorder.chains[root][0] == "CodeAgent"
    sandbox_runs = [parent for name, parent in recorder.chains.values() if name == "sandbox.run_tests"]
    assert sandbox_runs == [root, root]  # one per attempt, inside the agent's run


def test_astream_events_shows_steps_model_calls_and_sandbox_runs(agent: CodeAgent) -> None:
    async def collect() -> list[dict[str, Any]]:
        return [e async for e in agent.astream_events(TASK, version="v2")]

    events = asyncio.run(collect())
    custom = [e["name"] for e in events if e["event"] == "on_custom_event"]
    assert custom == [f"ragcoder.{kind}" for kind in STEPS]
    assert sum(e["event"] == "on_chat_model_start" for e in events) == 2  # generate, then repair
    assert [e["event"] for e in events if e["name"] == "sandbox.run_tests"] == [
        "on_chain_start",
        "on_chain_end",
    ] * 2
    streamed = [
        e["data"]["chunk"].kind
        for e in events
        if e["event"] == "on_chain_stream" and e["name"] == "CodeAgent"
    ]
    assert streamed == STEPS
    end = events[-1]
    assert end["event"] == "on_chain_end" and isinstance(end["data"]["output"], AgentResult)


def test_in_a_chain_the_next_step_gets_the_result(agent: CodeAgent) -> None:
    chain = RunnableLambda(lambda text: {"instruction": text, "tests": TESTS}) | agent | (lambda r: r.passed)
    assert list(chain.stream("Write mean(xs); 0.0 for an empty list.")) == [True]
    assert chain.invoke("Write mean(xs); 0.0 for an empty list.") is True


def test_a_consumer_that_stops_early_ends_the_run(agent: CodeAgent) -> None:
    recorder = Recorder()
    steps = agent.stream(TASK, {"callbacks": [recorder]})
    assert next(steps).kind == "retrieved"
    steps.close()
    assert [name for name, _ in recorder.custom] == ["ragcoder.retrieved"]
    assert agent.invoke(TASK).passed  # the agent is still usable


@pytest.mark.slow
@pytest.mark.docker
def test_the_default_local_model_streams_its_steps_from_the_docker_sandbox(qwen_chat, docker_sandbox) -> None:
    task = {
        "instruction": "Write a Python function is_palindrome(s) that ignores case and spaces.",
        "tests": "assert is_palindrome('Never odd or even')\nassert not is_palindrome('abc')\n",
    }

    async def collect() -> list[dict[str, Any]]:
        agent = CodeAgent(qwen_chat, docker_sandbox, max_attempts=3)
        return [e async for e in agent.astream_events(task, version="v2")]

    events = asyncio.run(collect())
    custom = [e["name"] for e in events if e["event"] == "on_custom_event"]
    assert custom[0] == "ragcoder.retrieved" and custom[-1] == "ragcoder.done"
    assert any(e["event"] == "on_chat_model_stream" for e in events)  # tokens as they come
    assert any(e["event"] == "on_chain_end" and e["name"] == "sandbox.run_tests" for e in events)
    result = events[-1]["data"]["output"]
    assert result.passed, result.attempts[-1].feedback
