"""Prompts for code generation and repair, and the formatting of their inputs."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate

SYSTEM = (
    "You are ragcoder, an expert Python programmer. You write correct, complete, self-contained "
    "Python 3.11 programs that use only the standard library unless told otherwise. "
    "Reply with exactly one ```python code block and nothing after it."
)

CODEGEN_USER = """{context}Task:
{instruction}
{tests}
Write the complete program. Define every function the task names, with the exact names and
signatures it gives. {demo}"""

REPAIR_USER = """{context}Task:
{instruction}
{tests}
This code was run and failed:
```python
{code}
```

What happened:
{feedback}

Fix the code. Keep the same function names and signatures. Return the complete corrected
program in one ```python block."""

DEMO_HINT = 'End with an `if __name__ == "__main__":` block that prints the results of a few example calls.'

MAX_CONTEXT_CHARS = 3000  # keep the prompt well inside a small model's useful window


def format_context(docs: Sequence[Document], max_chars: int = MAX_CONTEXT_CHARS) -> str:
    """Retrieved documents as a numbered, cited reference section ('' when there are none)."""
    if not docs:
        return ""
    parts: list[str] = []
    used = 0
    for i, doc in enumerate(docs, 1):
        source = format_source(doc)
        text = doc.page_content.strip()
        room = max_chars - used
        if room <= 200:
            break
        text = text[:room]
        parts.append(f"[{i}] {source}\n{text}")
        used += len(text)
    body = "\n\n".join(parts)
    return f"Reference material (use it if it helps; cite nothing):\n{body}\n\n"


def format_source(doc: Document) -> str:
    """`path:start-end (symbol)` or the best part of that the metadata has."""
    meta = doc.metadata or {}
    source = str(meta.get("source", "?"))
    if meta.get("start_line"):
        source += f":{meta['start_line']}"
        if meta.get("end_line"):
            source += f"-{meta['end_line']}"
    if meta.get("symbol"):
        source += f" ({meta['symbol']})"
    return source


def format_tests(tests: str | None) -> str:
    if not tests or not tests.strip():
        return ""
    return f"\nThe program must pass these tests:\n```python\n{tests.strip()}\n```\n"


def codegen_prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", CODEGEN_USER)])


def repair_prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", REPAIR_USER)])
