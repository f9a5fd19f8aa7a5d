"""The generate -> run -> check -> repair loop, with a scripted model and a real (trusted) runner.

The scripted model returns broken code first and fixed code once the error reaches its prompt,
which proves the feedback path. Code here is our own, so the plain-subprocess backend is fine;
the same loop against real Docker is in tests/test_end_to_end.py.
"""

from __future__ import annotations

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import Field
from ragcoder.agent import CodeAgent, Task
from ragcoder.sandbox import ErrorInfo, ExecResult, Sandbox

from tests.fakes import fenced, scripted

BROKEN = "def mean(xs):\n    return sum(xs) / len(xs)\n"
FIXED = "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n"
TESTS = "assert mean([1, 2, 3]) == 2\nassert mean([]) == 0.0\n"


def test_repair_fixes_code_after_seeing_the_error(trusted_sandbox) -> None:
    model = scripted([("ZeroDivisionError", fenced(FIXED)), ("", fenced(BROKEN))])
    agent = CodeAgent(model, trusted_sandbox, max_attempts=3)
    result = agent.invoke(Task(id="m", instruction="Write mean(xs); 0.0 for an empty list.", tests=TESTS))
    assert result.passed and result.stop_reason == "passed"
    assert [a.kind for a in result.attempts] == ["generate", "repair"]
    assert result.code == FIXED
    first = result.attempts[0]
    assert not first.passed
    assert "FAILED: assert mean([]) == 0.0" in first.feedback
    # the repair prompt carried the failing test, its error and the code that failed
    repair_prompt = model.prompts[1]
    assert "ZeroDivisionError" in repair_prompt and BROKEN.strip() in repair_prompt
    assert result.input_tokens > 0 and result.output_tokens > 0


def test_identical_failing_code_stops_early(trusted_sandbox) -> None:
    model = scripted([("", fenced(BROKEN))])
    agent = CodeAgent(model, trusted_sandbox, max_attempts=5)
    result = agent.invoke({"instruction": "Write mean(xs).", "tests": TESTS})
    assert not result.passed
    assert result.stop_reason == "repeated"
    # the repair repeated the code; told so once, it repeated it again: no point going on
    assert len(result.attempts) == 3
    assert "repeated code that had already failed" in model.prompts[2]


def test_a_repair_that_fails_like_before_is_followed_by_a_sampled_one(trusted_sandbox) -> None:
    # new code each time, but the same failing test and error: greedy decoding is in a rut
    wrong = [fenced(f"def mean(xs):\n    return sum(xs) / len(xs)  # try {i}\n") for i in range(3)]
    model = scripted([("", fenced(FIXED))], sequence=wrong)
    agent = CodeAgent(model, trusted_sandbox, max_attempts=4, stuck_temperature=0.8)
    result = agent.invoke({"instruction": "m", "tests": TESTS})
    assert result.passed and len(result.attempts) == 4
    temperatures = [a.temperature for a in result.attempts]
    assert temperatures == [None, None, 0.8, 0.8]  # attempt 2 failed as 1 did, attempt 3 as 2 did
    sampled = [o for o in model.options if o.get("temperature")]
    assert len(sampled) == 2 and sampled[0]["seed"] != sampled[1]["seed"]  # seeded per attempt
    assert result.to_dict()["attempts"][2]["temperature"] == 0.8  # the trace says how each was made
    again = scripted([("", fenced(FIXED))], sequence=list(wrong))
    CodeAgent(again, trusted_sandbox, max_attempts=4, stuck_temperature=0.8).invoke(
        {"instruction": "m", "tests": TESTS}
    )
    assert again.options == model.options  # same task, same seeds: reproducible


def test_repairs_are_greedy_by_default(trusted_sandbox) -> None:
    model = scripted([("", fenced(BROKEN))])
    agent = CodeAgent(model, trusted_sandbox, max_attempts=5)
    result = agent.invoke({"instruction": "Write mean(xs).", "tests": TESTS})
    assert result.stop_reason == "repeated" and len(result.attempts) == 3
    assert all(not o.get("temperature") for o in model.options)
    with pytest.raises(ValueError, match="stuck_temperature"):
        CodeAgent(model, trusted_sandbox, stuck_temperature=0.0)


def test_budget_is_respected(trusted_sandbox) -> None:
    # different wrong code every time, so only the budget can stop it
    model = scripted([], sequence=[fenced(f"def mean(xs):\n    return {i}\n") for i in range(10)])
    agent = CodeAgent(model, trusted_sandbox, max_attempts=3)
    result = agent.invoke({"instruction": "Write mean(xs).", "tests": TESTS})
    assert not result.passed and result.stop_reason == "budget"
    assert len(result.attempts) == 3


def test_examples_in_the_instruction_are_the_check(trusted_sandbox) -> None:
    instruction = "Write double(x).\n>>> double(2)\n4\n"
    model = scripted([("", fenced("def double(x):\n    return x + x\n"))])
    result = CodeAgent(model, trusted_sandbox).invoke(instruction)
    assert result.passed and result.check == "examples"
    assert result.tests == "assert double(2) == 4\n"


def test_without_tests_the_code_must_run_cleanly(trusted_sandbox) -> None:
    model = scripted([("NameError", fenced("print('hello')")), ("", fenced("print(hello)"))])
    result = CodeAgent(model, trusted_sandbox).invoke("Print hello.")
    assert result.passed and result.check == "runs"
    assert result.output.strip() == "hello"
    assert result.attempts[0].result.error.name == "NameError"


def test_reply_without_code_is_a_failure_not_a_pass(trusted_sandbox) -> None:
    model = scripted([("", "I cannot help with that.")])
    result = CodeAgent(model, trusted_sandbox, max_attempts=2).invoke("Print hello.")
    assert not result.passed


def test_events_stream_in_order(trusted_sandbox) -> None:
    model = scripted([("ZeroDivisionError", fenced(FIXED)), ("", fenced(BROKEN))])
    agent = CodeAgent(model, trusted_sandbox)
    kinds = [e.kind for e in agent.events({"instruction": "mean", "tests": TESTS})]
    assert kinds == ["retrieved", "generated", "ran", "failed", "repairing", "generated", "ran", "done"]


def test_runnable_batch_and_composition(trusted_sandbox) -> None:
    from langchain_core.runnables import RunnableLambda

    model = scripted([("", fenced("def one():\n    return 1\n"))])
    agent = CodeAgent(model, trusted_sandbox)
    chain = agent | RunnableLambda(lambda r: r.passed)
    assert chain.batch(["Write one() returning 1.\n>>> one()\n1", "Write one()."]) == [True, True]


def test_empty_instruction_is_rejected(trusted_sandbox) -> None:
    agent = CodeAgent(scripted([("", "")]), trusted_sandbox)
    with pytest.raises(ValueError, match="instruction is empty"):
        agent.invoke("   ")


class CrashingSandbox(Sandbox):
    """Delegates to a real runner, but its server 'dies' on the first ``crashes`` runs."""

    name = "crashing"

    def __init__(self, inner: Sandbox, crashes: int) -> None:
        self.inner, self.crashes, self.calls = inner, crashes, 0

    def run(self, code, *, stdin=None, files=None, timeout=None) -> ExecResult:
        self.calls += 1
        if self.calls <= self.crashes:
            return ExecResult(exit_code=None, error=ErrorInfo("SandboxCrashed", "server died", ""))
        return self.inner.run(code, stdin=stdin, files=files, timeout=timeout)


def test_a_sandbox_crash_is_retried_once_on_a_fresh_worker(trusted_sandbox) -> None:
    model = scripted([("", fenced(FIXED))])
    sandbox = CrashingSandbox(trusted_sandbox, crashes=1)
    result = CodeAgent(model, sandbox).invoke({"instruction": "mean", "tests": TESTS})
    assert result.passed and sandbox.calls == 2 and len(result.attempts) == 1


def test_a_sandbox_that_keeps_crashing_stops_the_task(trusted_sandbox) -> None:
    model = scripted([("", fenced(FIXED))])
    result = CodeAgent(model, CrashingSandbox(trusted_sandbox, crashes=9)).invoke(
        {"instruction": "m", "tests": TESTS}
    )
    assert not result.passed and result.stop_reason == "sandbox-error"
    assert result.attempts[0].result.error.name == "SandboxError"
    assert len(model.prompts) == 1  # no repair was asked for a sandbox failure


def test_tokens_stream_to_the_callback_and_the_result_is_the_same(trusted_sandbox) -> None:
    model = scripted([("ZeroDivisionError", fenced(FIXED)), ("", fenced(BROKEN))])
    tokens: list[str] = []
    events = list(
        CodeAgent(model, trusted_sandbox).events({"instruction": "m", "tests": TESTS}, on_token=tokens.append)
    )
    result = events[-1].data["result"]
    assert result.passed and result.code == FIXED
    assert "".join(tokens) == fenced(BROKEN) + fenced(FIXED)
    assert result.output_tokens > 0  # usage survives streaming


def test_a_repeated_answer_is_pointed_out_once_and_can_then_be_fixed(trusted_sandbox) -> None:
    model = scripted([("repeated code", fenced(FIXED)), ("", fenced(BROKEN))])
    result = CodeAgent(model, trusted_sandbox, max_attempts=4).invoke({"instruction": "m", "tests": TESTS})
    assert result.passed and len(result.attempts) == 3


def test_stuck_temperature_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from ragcoder.agent.config import ConfigError, resolve_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "none.toml"))
    assert resolve_config().stuck_temperature is None
    monkeypatch.setenv("RAGCODER_STUCK_TEMPERATURE", "0.8")
    assert resolve_config().stuck_temperature == 0.8
    monkeypatch.setenv("RAGCODER_STUCK_TEMPERATURE", "none")
    assert resolve_config().stuck_temperature is None
    assert resolve_config({"stuck_temperature": "0.5"}).stuck_temperature == 0.5
    with pytest.raises(ConfigError, match=r"stuck_temperature = 0\.0 from flag"):
        resolve_config({"stuck_temperature": "0"})


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
    agent = CodeAgent(model, trusted_sandbox, retriever=retriever, retrieval_gate=decide_retrieval)
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


def test_a_repair_reuses_its_first_attempts_prompt_with_a_real_model(model_tiny_dir, docker_sandbox) -> None:
    """The tiny random model writes no code, so every attempt fails and is repaired; the repair
    prompt repeats the task, and the model reads only what follows it."""
    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.chains.llm.prefix_cache import prefix_cache_for

    chat = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=16)
    prefix_cache_for(chat.llm.pipeline.model).clear()  # the model is shared with other tests
    agent = CodeAgent(chat, docker_sandbox, max_attempts=2)
    result = agent.invoke(Task(id="m", instruction="Write mean(xs); 0.0 for an empty list.", tests=TESTS))
    first, repair = result.attempts
    assert repair.kind == "repair" and not repair.passed
    assert first.cached_tokens == 0 and 32 <= repair.cached_tokens < repair.input_tokens
    assert result.to_dict()["attempts"][1]["cached_tokens"] == repair.cached_tokens


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
