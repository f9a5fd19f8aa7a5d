"""The loop's retrieval: the gate that decides when to retrieve, its settings, the models' API
guesser (split from test_loop.py)."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field
from ragcoder.agent import CodeAgent

from tests.fakes import fenced, scripted


class _CountingRetriever(BaseRetriever):
    """One fixed document; counts the queries (the gate decides whether there are any)."""

    queries: list[str] = Field(default_factory=list)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        self.queries.append(query)
        return [
            Document(
                "math.isclose(a, b, *, rel_tol=1e-09)",
                metadata={"path": "math.txt", "symbol": "math.isclose"},
            )
        ]


STUB = 'from typing import List\n\ndef total(xs: List[int]) -> int:\n    """Sum xs.\n    >>> total([1, 2])\n    3\n    """\n'
TOTAL = "from typing import List\n\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n"


def test_the_retrieval_gate_skips_self_contained_stubs_and_says_so(trusted_sandbox) -> None:
    from ragcoder.chains.retrieval.gate import decide_retrieval

    model = scripted([("", fenced(TOTAL))])
    retriever = _CountingRetriever()
    agent = CodeAgent(
        model,
        trusted_sandbox,
        retriever=retriever,
        retrieval_gate=decide_retrieval,
        samples=1,
        generate_tests=False,
    )
    stub = agent.invoke("Complete this function.\n\n" + STUB)
    assert stub.passed and retriever.queries == [] and stub.sources == []
    assert stub.retrieval.startswith("skipped: a self-contained function stub")
    assert "math.isclose" not in model.prompts[0]
    assert stub.to_dict()["retrieval"] == stub.retrieval  # the trace says why there were no docs

    words = agent.invoke(
        {"instruction": "Write total(xs), the sum of a list of ints.", "tests": "assert total([1, 2]) == 3"}
    )
    assert words.passed and len(retriever.queries) == 1 and words.sources
    assert words.retrieval.startswith("1 doc(s): a request in words")
    assert "math.isclose" in model.prompts[1]
    with_import = agent.invoke("Complete this.\n\nimport math\n\n" + STUB)
    assert len(retriever.queries) == 2 and with_import.retrieval == "1 doc(s): the stub imports math"


def test_without_a_gate_every_instruction_is_retrieved_for(trusted_sandbox) -> None:
    retriever = _CountingRetriever()
    agent = CodeAgent(scripted([("", fenced(TOTAL))]), trusted_sandbox, retriever=retriever)
    assert agent.invoke(STUB).retrieval == "1 doc(s)" and len(retriever.queries) == 1
    assert CodeAgent(scripted([("", fenced(TOTAL))]), trusted_sandbox).invoke(STUB).retrieval == "off"


def test_retrieval_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from ragcoder.agent.config import ConfigError, resolve_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "none.toml"))
    assert resolve_config().retrieval == "auto"
    (tmp_path / "ragcoder.toml").write_text("retrieval = false\n")  # the old boolean still works
    assert resolve_config().retrieval == "never"
    (tmp_path / "ragcoder.toml").write_text("retrieval = true\n")
    assert resolve_config().retrieval == "always"
    monkeypatch.setenv("RAGCODER_RETRIEVAL", "Auto")
    assert resolve_config().retrieval == "auto"
    with pytest.raises(
        ConfigError, match=r"retrieval = 'sometimes' from flag: choose one of auto, always, never"
    ):
        resolve_config({"retrieval": "sometimes"})


def test_guess_apis_setting_gives_the_retriever_the_models_guesser(
    model_tiny_dir, docker_sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from ragcoder.agent.config import build_agent, resolve_config
    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.chains.retrieval.api_guess import GUESS_MAX_NEW_TOKENS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "none.toml"))
    assert resolve_config().retrieval_guess is False
    monkeypatch.setenv("RAGCODER_RETRIEVAL_GUESS", "on")
    flags = {
        "model": str(model_tiny_dir),
        "sandbox": "docker",
        "index_path": str(tmp_path / "index"),
        "max_attempts": 1,
        "max_new_tokens": 16,
    }
    with build_agent(resolve_config(flags), quantize="none") as agent:
        guesser = agent.retriever.api_guesser
        assert guesser is not None
        names = guesser.invoke("read rows from a CSV file")  # the tiny random model: any words
        assert isinstance(names, list) and len(names) <= 3 and all(isinstance(n, str) for n in names)
        guess_chat = load_chat_model(
            str(model_tiny_dir), quantize="none", max_new_tokens=GUESS_MAX_NEW_TOKENS
        )
        assert guess_chat.llm.reuse_prefix is False  # its prompts leave the repairs' caches alone
        result = agent.invoke({"instruction": "Write one() returning 1.", "tests": "assert one() == 1"})
        assert result.retrieval.startswith("0 doc(s)")  # an empty index: no search, no model call
    with build_agent(resolve_config({**flags, "retrieval_guess": False}), quantize="none") as agent:
        assert agent.retriever.api_guesser is None
