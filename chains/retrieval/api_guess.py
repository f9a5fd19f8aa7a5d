"""Generation-augmented retrieval: the code model names the APIs a question needs, the index
confirms them.

MiniLM and BM25 both rank by the question's words, so a question worded unlike the API's doc
("copy a folder and everything in it" for ``shutil.copytree``) is missed by both. A code model has
seen that API used many times and usually knows its name. ``api_guess_chain(model)`` asks it for a
few fully qualified names; the hybrid retriever (``CodeDocRetriever.api_guesser``) looks each one up
among the indexed symbols and moves the chunks it finds up, the first guess most. A name the index
does not hold is dropped, so a made-up API costs only the call.

The call is one short generation per query, seconds where the search itself takes milliseconds
(docs/benchmarks.md, "Retrieval", ``bench/retrieval_bench.py --guess``), so it is off unless asked
for (``retrieval_guess`` in the agent's settings, ``--guess`` in the retrieval bench).
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

GUESS_COUNT = 3  # asked for; the model mostly names one, and later names weigh less (guess_decay)
GUESS_MAX_NEW_TOKENS = 40  # three dotted names and their line breaks, with room to spare

GUESS_SYSTEM = (
    "You know Python and its standard library. Reply with the {count} fully qualified names "
    "(module.function, module.Class or module.Class.method) most likely to answer the question, "
    "one per line, the best first. Names only: no code, no explanation."
)

_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def parse_api_names(text: str, limit: int = GUESS_COUNT) -> list[str]:
    """The first name written like an API on each line of ``text`` (``1. `json.loads()` `` gives
    ``json.loads``), without repeats, at most ``limit``. Prose lines give their first word, which
    the index lookup then fails to find; that is harmless."""
    names: list[str] = []
    for line in text.splitlines():
        match = _NAME.search(line)
        if match and match.group(0) not in names:
            names.append(match.group(0))
        if len(names) >= limit:
            break
    return names


# One worked example: without it the model mostly names a single API, and recall drops; a
# numbered list instead is slower and no better (docs/benchmarks.md, "Retrieval",
# `bench/retrieval_bench.py --guess`). The example's question is in neither half of the questions.
EXAMPLE = (
    "how many columns wide is the terminal",
    "shutil.get_terminal_size\nos.get_terminal_size\nos.environ",
)


def guess_prompt(count: int = GUESS_COUNT) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages(
        [
            ("system", GUESS_SYSTEM.replace("{count}", str(count))),
            ("human", EXAMPLE[0]),
            ("ai", EXAMPLE[1]),
            ("human", "{question}"),
        ]
    )


def api_guess_chain(model: BaseChatModel | Runnable, count: int = GUESS_COUNT) -> Runnable[str, list[str]]:
    """question -> up to ``count`` API names the model thinks answer it (best first).

    Any chat model works; give the local one a small ``max_new_tokens`` (``load_chat_model(spec,
    max_new_tokens=GUESS_MAX_NEW_TOKENS)`` shares the loaded weights).
    """
    return (
        guess_prompt(count)
        | model
        | StrOutputParser()
        | RunnableLambda(lambda text: parse_api_names(text, count))
    ).with_config(run_name="api_guess")


def load_api_guesser(spec: Any = None, **load_kwargs: Any) -> Runnable[str, list[str]]:
    """``api_guess_chain`` over the local model ``spec`` (default: the agent's default model),
    sharing its loaded weights (``load_kwargs`` as for ``load_chat_model``).

    Its prompts stay out of the model's prefix cache (chains/llm/prefix_cache.py): they share only
    their short system message, and would push out the code prompts that repairs start from.
    """
    from ragcoder.chains.llm.chat_model import DEFAULT_MODEL, load_chat_model

    chat = load_chat_model(spec or DEFAULT_MODEL, max_new_tokens=GUESS_MAX_NEW_TOKENS, **load_kwargs)
    chat.llm.reuse_prefix = False
    return api_guess_chain(chat)
