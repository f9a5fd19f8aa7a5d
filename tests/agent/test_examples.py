"""The embedding examples in examples/ run as written: with a scripted model for speed, and the tool
agent also with the real default model in the Docker sandbox (slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage

from tests.fakes import fenced, scripted

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_codeagent_inside_an_lcel_chain(trusted_sandbox) -> None:
    example = load_example("compose_lcel")
    model = scripted(
        [
            ("clamp", fenced("def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n")),
            (
                "chunks",
                fenced("def chunks(xs, n):\n    return [xs[i:i + n] for i in range(0, len(xs), n)]\n"),
            ),
        ]
    )
    reports = example.main(model=model, sandbox=trusted_sandbox)
    assert [r.splitlines()[0] for r in reports] == ["## clamp(x, lo, hi)", "## chunks(xs, n)"]
    assert all("passed after 0 repair(s)" in r for r in reports)


class ToolCallingFake(GenericFakeChatModel):
    """Asks to run code once, then answers with what the tool printed."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def test_sandbox_tool_in_create_agent(trusted_sandbox) -> None:
    example = load_example("tool_agent")
    call = {"name": "run_python", "args": {"code": "print(sum(i * i for i in range(1, 101)))"}, "id": "c1"}
    model = ToolCallingFake(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="338350")])
    )
    answer = example.main(model=model, sandbox=trusted_sandbox)
    assert answer == "338350"


def test_tool_output_reached_the_model(trusted_sandbox) -> None:
    from langchain.agents import create_agent
    from ragcoder.sandbox.tool import RunPythonTool

    call = {"name": "run_python", "args": {"code": "print(6 * 7)"}, "id": "c1"}
    model = ToolCallingFake(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="42")])
    )
    agent = create_agent(model, tools=[RunPythonTool(sandbox=trusted_sandbox)])
    state = agent.invoke({"messages": [{"role": "user", "content": "6*7?"}]})
    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert tool_messages and "42" in str(tool_messages[0].content)


@pytest.mark.slow
@pytest.mark.docker
def test_the_default_local_model_solves_the_tool_agent_task_in_docker(qwen_chat, docker_sandbox) -> None:
    example = load_example("tool_agent")
    messages = example.run(model=qwen_chat, sandbox=docker_sandbox)
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert calls and all(c["name"] == "run_python" for c in calls)
    assert any("338350" in str(r.content) for r in results)  # computed in the sandbox, not guessed
    assert "338350" in str(messages[-1].content).replace(",", "")
