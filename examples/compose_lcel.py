"""CodeAgent inside a larger LCEL chain: a spec is turned into an instruction, solved and checked
in the sandbox, and the checked code is wrapped in a short report.

    .venv/bin/python examples/compose_lcel.py            # the local default model, Docker sandbox
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from ragcoder.agent import CodeAgent
from ragcoder.sandbox import Sandbox


def build_chain(agent: CodeAgent) -> Any:
    """spec dict -> {"spec", "result"} -> Markdown report. Any Runnable could stand on either side."""
    to_task = RunnableLambda(
        lambda spec: {
            "instruction": f"Write a Python function {spec['signature']} that {spec['does']}.",
            "tests": "\n".join(spec.get("asserts", [])),
        }
    )
    solve = RunnableParallel(spec=RunnablePassthrough(), result=to_task | agent)
    report = RunnableLambda(
        lambda x: (
            f"## {x['spec']['signature']}\n\n"
            f"{'passed' if x['result'].passed else 'FAILED'} after {x['result'].repairs} repair(s)\n\n"
            f"```python\n{x['result'].code.strip()}\n```\n"
        )
    )
    return solve | report


SPECS = [
    {
        "signature": "clamp(x, lo, hi)",
        "does": "limits x to the range [lo, hi]",
        "asserts": [
            "assert clamp(5, 0, 3) == 3",
            "assert clamp(-1, 0, 3) == 0",
            "assert clamp(2, 0, 3) == 2",
        ],
    },
    {
        "signature": "chunks(xs, n)",
        "does": "splits the list xs into consecutive lists of length n (the last may be shorter)",
        "asserts": [
            "assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]",
            "assert chunks([], 3) == []",
        ],
    },
]


def main(model: Any = None, sandbox: Sandbox | None = None) -> list[str]:
    if model is None:
        from ragcoder.chains.llm.chat_model import load_chat_model

        model = load_chat_model()
    from contextlib import nullcontext

    from ragcoder.sandbox import open_sandbox

    # close the sandbox only if we opened it
    with open_sandbox("auto") if sandbox is None else nullcontext(sandbox) as box:
        agent = CodeAgent(model, box, max_attempts=3)
        reports = build_chain(agent).batch(SPECS)
    for text in reports:
        print(text)
    return reports


if __name__ == "__main__":
    main()
