"""Give ragcoder's sandbox to a LangChain agent as its `run_python` tool.

`langchain.agents.create_agent` builds a tool-calling agent (a langgraph graph); every piece of
code the model wants to run goes through the hardened sandbox, never this process. With no model
given it runs the default local model, which calls tools through its chat template.

    .venv/bin/python examples/tool_agent.py
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import BaseMessage
from ragcoder.sandbox import Sandbox, open_sandbox
from ragcoder.sandbox.tool import RunPythonTool

QUESTION = "What is the sum of the squares of the first 100 positive integers? Compute it, don't guess."
# A small local model needs the last step said too: without it Qwen2.5-1.5B often ends with an
# empty reply once it has the tool's output (docs/benchmarks.md, chat model suites)
SYSTEM_PROMPT = (
    "Use the run_python tool to compute the answer, printing it. Then reply with the number it printed."
)


def run(model: Any = None, sandbox: Sandbox | None = None, question: str = QUESTION) -> list[BaseMessage]:
    """The agent's whole conversation: the question, its tool calls and results, the answer."""
    if model is None:  # any tool-calling chat model goes here, hosted or local
        from ragcoder.chains.llm.chat_model import load_chat_model

        model = load_chat_model()
    # close the sandbox only if we opened it
    with open_sandbox("auto") if sandbox is None else nullcontext(sandbox) as box:
        agent = create_agent(model, tools=[RunPythonTool(sandbox=box)], system_prompt=SYSTEM_PROMPT)
        return agent.invoke({"messages": [{"role": "user", "content": question}]})["messages"]


def main(model: Any = None, sandbox: Sandbox | None = None) -> str:
    answer = str(run(model, sandbox)[-1].content)
    print(answer)
    return answer


if __name__ == "__main__":
    main()
