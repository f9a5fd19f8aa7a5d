"""A user's own LangChain vector store (a real ``langchain_chroma.Chroma``) as the agent's docs.

``CodeAgent`` and ``build_agent`` take any retriever, so ``store.as_retriever()`` plugs in; the
retrieval gate still decides per task whether it is asked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ragcoder.agent import AgentConfig, CodeAgent, build_agent
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.gate import decide_retrieval

from tests.fakes import fenced, scripted

ORDERS = "def order_total(order):\n    return sum(line.price * line.qty for line in order.lines)\n"
ANSWER = "def invoice_total(lines):\n    return sum(price * qty for price, qty in lines)\n"
WORDS = "Sum an order's lines, price times quantity, like order_total does: invoice_total(lines)"
STUB = 'def double(x: int) -> int:\n    """Twice x.\n    >>> double(2)\n    4\n    """\n'


@pytest.fixture
def user_store(tmp_path: Path):
    """The user's own Chroma store, made with langchain-chroma (not ragcoder's indexer)."""
    from langchain_chroma import Chroma

    store = Chroma(
        collection_name="my_code",
        embedding_function=HashingEmbeddings(64),
        persist_directory=str(tmp_path / "my-chroma"),
    )
    store.add_texts(
        [ORDERS, "Shipping is free above 50 euros; below, it costs 4.90."],
        metadatas=[{"source": "billing/orders.py", "symbol": "order_total"}, {"source": "docs/shipping.md"}],
    )
    return store


def test_a_chroma_store_of_your_own_feeds_the_prompt_where_the_gate_allows(
    user_store, trusted_sandbox
) -> None:
    double = "def double(x: int) -> int:\n    return 2 * x\n"
    model = scripted([], sequence=[fenced(ANSWER), fenced(double)])
    retriever = user_store.as_retriever(search_kwargs={"k": 1})
    agent = CodeAgent(
        model,
        trusted_sandbox,
        retriever=retriever,
        retrieval_gate=decide_retrieval,
        samples=1,
        generate_tests=False,
    )  # one prompt per task: prompts[0] and [1] below

    words = agent.invoke(WORDS)  # names no stdlib API: the path that leaves the stdlib corpus out
    assert words.passed and words.sources == ["billing/orders.py (order_total)"]
    assert words.retrieval.startswith("1 doc(s): a request in words that names no API")
    assert "line.price * line.qty" in model.prompts[0]

    stub = agent.invoke(STUB)
    assert stub.passed and stub.sources == [] and stub.retrieval.startswith("skipped: a self-contained")
    assert "line.price" not in model.prompts[1]


@pytest.mark.slow
def test_build_agent_takes_your_retriever_instead_of_the_index(
    user_store, model_tiny_dir: Path, tmp_path: Path
) -> None:
    model = scripted([("", fenced(ANSWER))])  # replaces the tiny model built from config.model
    config = AgentConfig(model=str(model_tiny_dir), sandbox="unsafe-local", index_path=str(tmp_path / "none"))
    retriever = user_store.as_retriever(search_kwargs={"k": 2})
    with build_agent(config, retriever=retriever, models=lambda chat: (model, model)) as agent:
        result = agent.invoke(WORDS)
    assert result.passed and set(result.sources) == {"billing/orders.py (order_total)", "docs/shipping.md"}
    assert not (tmp_path / "none").exists()  # ragcoder's own index was never opened

    config.retrieval = "never"
    with build_agent(config, retriever=retriever, models=lambda chat: (model, model)) as agent:
        assert agent.invoke(WORDS).sources == []
