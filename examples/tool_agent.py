"""Give ragcoder's sandbox to a LangChain agent as its `run_python` tool.

`langchain.agents.create_agent` builds a tool-calling agent (a langgraph graph); every piece of
code the model wants to run goes through the hardened sandbox, never this process.

    .venv/bin/python examples/tool_agent.py   # needs a chat model that can call tools
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from langchain.agents import create_agent
from ragcoder.sandbox import Sandbox, open_sandbox
from ragcoder.sandbox.tool import RunPythonTool

QUESTION = "What is the sum of the squares of the first 100 positive integers? Compute it, don't guess."


def main(model: Any = None, sandbox: Sandbox | None = None) -> str:
    if model is None:  # a hosted or local tool-calling chat model goes here
        from ragcoder.chains.llm.chat_model import load_chat_model

        model = load_chat_model()
    # close the sandbox only if we opened it
    with open_sandbox("auto") if sandbox is None else nullcontext(sandbox) as box:
        agent = create_agent(
            model,
            tools=[RunPythonTool(sandbox=box)],
            system_prompt="Answer by running Python with the run_python tool; report the printed result.",
        )
        state = agent.invoke({"messages": [{"role": "user", "content": QUESTION}]})
    answer = str(state["messages"][-1].content)
    print(answer)
    return answer


if __name__ == "__main__":
    main()
