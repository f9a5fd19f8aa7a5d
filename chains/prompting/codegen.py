"""The codegen and repair chains: prompt | chat model | code extraction, as LangChain Runnables.

Any LangChain chat model works (our local HF model, a hosted one, or a scripted fake in tests).
Input is a dict; output is a :class:`Draft` dict with the code, the raw reply and token usage.

    chain = codegen_chain(model)
    draft = chain.invoke({"instruction": "Write fib(n) ...", "docs": [], "tests": None})
    draft["code"]
"""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda
from ragcoder.chains.prompting.extract import extract_code
from ragcoder.chains.prompting.prompts import (
    DEMO_HINT,
    codegen_prompt,
    format_context,
    format_tests,
    repair_prompt,
)


class Draft(TypedDict):
    code: str
    reply: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int  # prompt tokens whose keys and values were reused from an earlier prompt


def _prompt_vars(inputs: dict[str, Any]) -> dict[str, Any]:
    if not str(inputs.get("instruction", "")).strip():
        raise ValueError("the instruction is empty: say what the code should do")
    return {
        "instruction": str(inputs["instruction"]).strip(),
        "context": format_context(inputs.get("docs") or []),
        "tests": format_tests(inputs.get("tests")),
        "demo": DEMO_HINT if inputs.get("demo", not inputs.get("tests")) else "",
        "code": str(inputs.get("code", "")).strip(),
        "feedback": str(inputs.get("feedback", "")).strip(),
    }


def _to_draft(message: AIMessage | str) -> Draft:
    if isinstance(message, str):
        reply, usage = message, {}
    else:
        reply = message.content if isinstance(message.content, str) else str(message.content)
        usage = dict(message.usage_metadata or {})
    return Draft(
        code=extract_code(reply),
        reply=reply,
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        cached_tokens=int((usage.get("input_token_details") or {}).get("cache_read", 0)),
    )


def codegen_chain(model: BaseChatModel | Runnable) -> Runnable[dict[str, Any], Draft]:
    """{instruction, docs?, tests?, demo?} -> Draft."""
    return (
        RunnableLambda(_prompt_vars, name="codegen_inputs")
        | codegen_prompt()
        | model
        | RunnableLambda(_to_draft, name="extract_code")
    ).with_config(run_name="codegen")


def repair_chain(model: BaseChatModel | Runnable) -> Runnable[dict[str, Any], Draft]:
    """{instruction, code, feedback, docs?, tests?} -> Draft with the corrected code."""
    return (
        RunnableLambda(_prompt_vars, name="repair_inputs")
        | repair_prompt()
        | model
        | RunnableLambda(_to_draft, name="extract_code")
    ).with_config(run_name="repair")


def codegen_messages(inputs: dict[str, Any]) -> list[BaseMessage]:
    """The chat messages ``codegen_chain`` sends for ``inputs`` (to batch them with other prompts)."""
    return codegen_prompt().format_messages(**_prompt_vars(inputs))


def draft_from_reply(message: AIMessage | str) -> Draft:
    """A model's reply as a :class:`Draft`, as the chains make it."""
    return _to_draft(message)
