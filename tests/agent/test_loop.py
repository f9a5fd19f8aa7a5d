"""The loop: candidates and tests from a scripted model, every candidate run against every test
by the real harness (the trusted plain-subprocess runner: the code here is our own), selection,
repairs and the verdict. The same path against real Docker is in test_verify_docker.py.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import Field
from ragcoder.agent import CodeAgent, Task
from ragcoder.agent.candidates import seed_for
from ragcoder.sandbox import ErrorInfo, ExecResult, Sandbox

from tests.agent.test_runnable import STEPS
from tests.fakes import ScriptedChatModel, fenced, scripted

BROKEN = "def mean(xs):\n    return sum(xs) / len(xs)\n"
FIXED = "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n"
TESTS = "assert mean([1, 2, 3]) == 2\nassert mean([]) == 0.0\n"
ASKS_TESTS = "different test cases for the function"
ASKS_REPAIR = "This code was run and failed"


class SamplingModel(ScriptedChatModel):
    """Greedy calls answer by rule; a sampled call (temperature set) takes the next scripted reply
    of its kind (tests, repair or code), or the rule's when the list is used up. Calls run one at
    a time, so replies land in a fixed order."""

    code_samples: list[str] = Field(default_factory=list)
    test_samples: list[str] = Field(default_factory=list)
    repair_samples: list[str] = Field(default_factory=list)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any):
        if kwargs.get("temperature"):
            prompt = "\n".join(str(m.content) for m in messages)
            queue = (
                self.test_samples
                if ASKS_TESTS in prompt
                else self.repair_samples
                if ASKS_REPAIR in prompt
                else self.code_samples
            )
            if queue:
                self.sequence.insert(0, queue.pop(0))
        return super()._generate(messages, stop, run_manager, **kwargs)

    def batch(self, inputs, config=None, *, return_exceptions: bool = False, **kwargs: Any):
        return [self.invoke(i, **kwargs) for i in inputs]


def sampling(greedy: str, *, code=(), tests=(), repairs=()) -> SamplingModel:
    return SamplingModel(
        rules=[("", fenced(greedy))],
        code_samples=[fenced(c) for c in code],
        test_samples=list(tests),
        repair_samples=[fenced(r) for r in repairs],
    )


SQUARE = "Write a Python function `square(n)` that returns n times n."
RIGHT = "def square(n):\n    return n * n\n"
RIGHT_TOO = "def square(n):\n    return n ** 2\n"
WRONG = "def square(n):\n    return n + n\n"
OWN_TESTS = fenced(
    "assert square(3) == 9\nassert square(0) == 0\nassert square(-2) == 4\nassert square(2) == 4"
)


def test_the_candidates_that_agree_on_the_models_tests_win(trusted_sandbox) -> None:
    model = sampling(WRONG, code=[RIGHT, RIGHT_TOO, WRONG], tests=[OWN_TESTS, OWN_TESTS])
    result = CodeAgent(model, trusted_sandbox, samples=4).invoke(SQUARE)
    assert result.code == RIGHT and result.passed and result.verdict == "self-tested"
    assert [c.origin for c in result.candidates] == ["greedy", "sampled", "sampled", "sampled"]
    assert result.candidates[3].duplicate_of == 1  # the same code as the greedy one: not run again
    assert result.selection.method == "codet" and result.selection.winner == 2
    assert result.selection.groups[0] == {"candidates": [2, 3], "size": 2, "tests_passed": 4, "score": 8}
    assert result.summary() == "4 candidates, 2 agree, 4/4 own tests: self-tested"
    assert result.function == "square" and len(result.counted_tests("generated")) == 4
    assert len(model.prompts) == 1 + 3 + 2 and result.repairs == 0  # greedy, 3 sampled, 2 asking for tests
    sampled = [o["seed"] for o in model.options if o.get("temperature")]
    # one reply of tests first; the greedy candidate failing them, the others and more tests in one call
    assert sampled == [seed_for(SQUARE, 0, 0)] + [seed_for(SQUARE, 1, 0)] * 4
    assert result.test_tokens[1] > 0 and result.output_tokens > sum(
        c.output_tokens for c in result.candidates
    )


def test_without_examples_a_first_candidate_that_passes_its_own_tests_is_the_answer(trusted_sandbox) -> None:
    one_wrong = fenced(  # the model's expected values are often wrong: 4 of 5 is enough
        "assert square(3) == 9\nassert square(0) == 0\nassert square(-2) == 4\nassert square(2) == 4\n"
        "assert square(5) == 20"
    )
    model = sampling(RIGHT, code=[WRONG, RIGHT_TOO, WRONG], tests=[one_wrong, OWN_TESTS])
    result = CodeAgent(model, trusted_sandbox, samples=4).invoke(SQUARE)
    assert result.code == RIGHT and result.verdict == "self-tested" and len(result.candidates) == 1
    assert len(model.prompts) == 1 + 1  # the greedy candidate and one reply of tests: nothing else
    assert result.notes == ["the first candidate passed 4/5 own tests: no others sampled"]
    assert result.summary() == "1 candidate, 4/5 own tests: self-tested"
    assert [o["seed"] for o in model.options if o.get("temperature")] == [seed_for(SQUARE, 0, 0)]
    assert result.candidates[0].run_ms > 0 and result.test_tokens[1] > 0

    # 2 own tests are too few to stop on; always_sample asks for candidates and tests in one call
    model = sampling(RIGHT, code=[WRONG, RIGHT_TOO, WRONG], tests=[fenced("assert square(3) == 9")] * 2)
    few = CodeAgent(model, trusted_sandbox, samples=4).invoke(SQUARE)
    assert len(few.candidates) == 4 and len(model.prompts) == 1 + 2 + 3 and few.code == RIGHT
    model = sampling(RIGHT, code=[WRONG, RIGHT_TOO, WRONG], tests=[one_wrong, OWN_TESTS])
    every = CodeAgent(model, trusted_sandbox, samples=4, always_sample=True).invoke(SQUARE)
    assert len(every.candidates) == 4 and every.code == RIGHT and not every.notes
    assert [o["seed"] for o in model.options if o.get("temperature")] == [seed_for(SQUARE, 1, 0)] * 5


def test_a_lone_candidate_that_raises_on_its_own_tests_is_not_self_tested(trusted_sandbox) -> None:
    raises = "def square(n):\n    if n < 0:\n        raise ValueError(n)\n    return n * n\n"
    tests = fenced("assert square(3) == 9\nassert square(-2) == 4\nassert square(-3) == 9")
    model = sampling(raises, tests=[tests])
    result = CodeAgent(model, trusted_sandbox, samples=1, test_prompts=1).invoke(SQUARE)
    assert result.verdict == "unverified" and result.summary() == "1 candidate, 1/3 own tests: unverified"
    assert not any(t.dropped for t in result.test_cases)  # one candidate cannot tell a broken test


def test_a_rerun_repeats_the_same_seeds_and_choice(trusted_sandbox) -> None:
    runs = []
    for _ in range(2):
        model = sampling(WRONG, code=[RIGHT, WRONG, RIGHT_TOO], tests=[OWN_TESTS])
        result = CodeAgent(model, trusted_sandbox, samples=4, test_prompts=1).invoke(SQUARE)
        runs.append((model.options, result.selection.winner, [c.code for c in result.candidates]))
    assert runs[0] == runs[1]


def test_the_instructions_examples_filter_before_the_models_tests_rank(trusted_sandbox) -> None:
    instruction = SQUARE + "\n\n>>> square(3)\n9\n"
    # the model got the task wrong, and repeated the example (spaced its own way: still a repeat)
    wrong_tests = fenced("assert square(3) == 6\nassert square( 3 )==9\nassert square(1) == 2")
    model = sampling(WRONG, code=[WRONG + "# again\n", RIGHT], tests=[wrong_tests])
    result = CodeAgent(model, trusted_sandbox, samples=3, test_prompts=1).invoke(instruction)
    assert result.code == RIGHT and result.verdict == "verified" and result.check == "examples"
    assert (
        result.selection.method == "only" and "passed the instruction's examples" in result.selection.reason
    )
    assert [t.origin for t in result.test_cases] == ["example", "generated", "generated"]
    assert result.summary() == "3 candidates, 1 agree, 1/1 examples, 0/2 own tests: verified"


def test_a_first_candidate_that_passes_the_examples_is_the_answer(trusted_sandbox) -> None:
    instruction = SQUARE + "\n\n>>> square(3)\n9\n"
    model = sampling(RIGHT, code=[WRONG, RIGHT_TOO, WRONG], tests=[OWN_TESTS, OWN_TESTS])
    result = CodeAgent(model, trusted_sandbox, samples=4).invoke(instruction)
    assert result.code == RIGHT and result.verdict == "verified" and len(result.candidates) == 1
    assert len(model.prompts) == 1  # no samples, no own tests: a verified answer costs a single shot
    assert result.notes == ["the first candidate passed the instruction's examples: no others sampled"]
    assert result.summary() == "1 candidate, 1/1 examples: verified"
    assert result.candidates[0].run_ms > 0 and result.candidates[0].statuses == {
        "assert square(3) == 9": "pass"
    }

    model = sampling(RIGHT, code=[WRONG, RIGHT_TOO, WRONG], tests=[OWN_TESTS, OWN_TESTS])
    every = CodeAgent(model, trusted_sandbox, samples=4, always_sample=True).invoke(instruction)
    assert len(every.candidates) == 4 and len(model.prompts) == 1 + 3 + 2 and every.code == RIGHT

    model = sampling(WRONG, code=[WRONG, RIGHT_TOO, WRONG], tests=[OWN_TESTS, OWN_TESTS])
    failed_first = CodeAgent(model, trusted_sandbox, samples=4).invoke(instruction)
    assert failed_first.code == RIGHT_TOO and len(failed_first.candidates) == 4 and not failed_first.notes


THREE_N = "def square(n):\n    return 3 * n\n"  # right on square(3) == 9 alone


def test_confirm_examples_samples_others_when_the_first_fails_its_own_tests(trusted_sandbox) -> None:
    instruction = SQUARE + "\n\n>>> square(3)\n9\n"
    model = sampling(THREE_N, code=[WRONG, RIGHT_TOO, WRONG], tests=[OWN_TESTS, OWN_TESTS])
    result = CodeAgent(model, trusted_sandbox, samples=4, confirm_examples=True).invoke(instruction)
    assert result.code == RIGHT_TOO and result.verdict == "verified" and len(result.candidates) == 4
    assert result.notes[0] == (
        "the first candidate passed the instruction's examples but only 1/3 own tests: others sampled"
    )
    assert len(model.prompts) == 1 + 1 + 3 + 1  # one reply of tests first, then the rest in one call
    sampled = [o["seed"] for o in model.options if o.get("temperature")]
    assert sampled == [seed_for(instruction, 0, 0)] + [seed_for(instruction, 1, 0)] * 4
    unconfirmed = sampling(THREE_N, code=[RIGHT_TOO], tests=[OWN_TESTS])
    assert CodeAgent(unconfirmed, trusted_sandbox, samples=4).invoke(instruction).code == THREE_N

    model = sampling(RIGHT, code=[WRONG], tests=[OWN_TESTS])
    right = CodeAgent(model, trusted_sandbox, samples=4, confirm_examples=True).invoke(instruction)
    assert right.code == RIGHT and right.verdict == "verified" and len(right.candidates) == 1
    assert len(model.prompts) == 2 and right.notes == [
        "the first candidate passed the instruction's examples and 3/3 own tests: no others sampled"
    ]
    model = sampling(THREE_N, code=[RIGHT], tests=["I cannot write tests for this."])
    untested = CodeAgent(model, trusted_sandbox, samples=4, confirm_examples=True).invoke(instruction)
    assert untested.code == THREE_N and len(untested.candidates) == 1  # nothing spoke against the examples
    assert untested.notes == [
        "the first candidate passed the instruction's examples: no others sampled",
        "the model wrote no usable tests for square",
    ]


ALTERNATE = "Write a Python function `alternate(xs)`: smallest, largest, next smallest, and so on.\n\n>>> alternate([1, 2, 3, 4])\n[1, 4, 2, 3]\n"
PAIRS_ONLY = (  # right on the example, raises on a list of odd length
    "def alternate(xs):\n    xs, out = sorted(xs), []\n    while xs:\n"
    "        out.append(xs.pop(0))\n        out.append(xs.pop())\n    return out\n"
)
ALTERNATE_RIGHT = (
    "def alternate(xs):\n    xs, out = sorted(xs), []\n    while xs:\n"
    "        out.append(xs.pop(0))\n        if xs:\n            out.append(xs.pop())\n    return out\n"
)


def test_a_first_candidate_that_raises_on_inputs_like_the_examples_is_not_verified(trusted_sandbox) -> None:
    tests = fenced("assert alternate([3, 1, 2]) == [1, 3, 2]\nassert alternate([]) == []")
    model = sampling(PAIRS_ONLY, code=[ALTERNATE_RIGHT], tests=[tests])
    result = CodeAgent(model, trusted_sandbox, samples=2, test_prompts=1).invoke(ALTERNATE)
    assert result.code == PAIRS_ONLY and result.passed and result.verdict == "unverified"
    assert len(result.candidates) == 1 and len(model.prompts) == 1  # no samples: on dev they did not help
    assert result.notes == [
        "the first candidate passed the examples but raised on alternate([1, 2, 3]): raised IndexError: "
        "not verified"
    ]
    model = sampling(PAIRS_ONLY, code=[ALTERNATE_RIGHT], tests=[tests])
    unguarded = CodeAgent(model, trusted_sandbox, samples=2, check_variants=False).invoke(ALTERNATE)
    assert unguarded.code == PAIRS_ONLY and unguarded.verdict == "verified" and len(unguarded.candidates) == 1
    model = sampling(ALTERNATE_RIGHT, code=[PAIRS_ONLY], tests=[tests])
    right = CodeAgent(model, trusted_sandbox, samples=2).invoke(ALTERNATE)
    assert right.code == ALTERNATE_RIGHT and right.verdict == "verified" and len(model.prompts) == 1


def test_passing_only_wrong_own_tests_is_never_a_pass(trusted_sandbox) -> None:
    instruction = SQUARE + "\n\n>>> square(3)\n9\n"
    model = sampling(WRONG, tests=[fenced("assert square(3) == 6")])
    result = CodeAgent(model, trusted_sandbox, samples=1, max_attempts=1).invoke(instruction)
    assert not result.passed and result.verdict == "unverified" and result.stop_reason == "budget"
    assert result.candidates[0].statuses == {"assert square(3) == 9": "fail", "assert square(3) == 6": "pass"}


def test_generated_tests_that_hang_or_raise_for_everyone_are_dropped(trusted_sandbox) -> None:
    loop = "def square(n):\n    total = 0\n    for _ in range(abs(n)):\n        total += abs(n)\n    return total\n"
    tests = fenced("assert square(3) == 9\nassert square(10**12) == 10**24\nassert square('a') == 'aa'")
    model = sampling(loop, code=[RIGHT], tests=[tests])
    result = CodeAgent(model, trusted_sandbox, samples=2, test_prompts=1, test_timeout=0.3).invoke(SQUARE)
    dropped = {t.name: t.dropped for t in result.test_cases}
    assert dropped == {
        "assert square(3) == 9": "",
        "assert square(10 ** 12) == 10 ** 24": "",  # RIGHT passes it: it tells the two apart
        "assert square('a') == 'aa'": "it raised (or hung) for every candidate",
    }
    assert result.candidates[0].statuses["assert square(10 ** 12) == 10 ** 24"] == "timeout"
    assert result.code == RIGHT and result.verdict == "self-tested"
    assert any("1 generated test(s) dropped" in note for note in result.notes)
    assert "did not finish in time" in str(result.candidates[0].report.outcomes)


def test_a_request_that_names_no_function_gets_no_tests_and_says_so(trusted_sandbox) -> None:
    model = sampling("print('hello')", tests=[OWN_TESTS])
    result = CodeAgent(model, trusted_sandbox, samples=2).invoke("Print hello.")
    assert result.passed and result.verdict == "unverified" and result.check == "runs"
    assert result.function is None and result.test_cases == []
    assert result.notes == ["the request names no function, so no tests were generated"]
    assert not any(ASKS_TESTS in p for p in model.prompts) and result.output.strip() == "hello"


def test_repairs_see_the_failing_tests_are_sampled_and_never_rerun_old_code(trusted_sandbox) -> None:
    model = sampling(BROKEN, code=[BROKEN + "\n"], repairs=[BROKEN, FIXED])
    result = CodeAgent(model, trusted_sandbox, samples=2, max_attempts=3).invoke(
        Task(id="m", instruction="Write mean(xs); 0.0 for an empty list.", tests=TESTS)
    )
    assert result.passed and result.stop_reason == "passed" and result.verdict == "verified"
    assert [(c.number, c.origin, c.duplicate_of) for c in result.candidates] == [
        (1, "greedy", None),
        (1, "sampled", 1),
        (2, "repair", 1),
        (2, "repair", None),
    ]
    assert [a.kind for a in result.attempts] == ["generate", "repair"] and result.code == FIXED
    repair_prompts = [p for p in model.prompts if ASKS_REPAIR in p]
    assert len(repair_prompts) == 2 and "FAILED: assert mean([]) == 0.0" in repair_prompts[0]
    assert "ZeroDivisionError" in repair_prompts[0] and BROKEN.strip() in repair_prompts[0]
    seeds = [o["seed"] for o in model.options if o.get("temperature")][-2:]
    assert seeds == [seed_for(result.instruction, 2, 0), seed_for(result.instruction, 2, 1)]
    assert not any(ASKS_TESTS in p for p in model.prompts)  # the user's tests: none generated


def test_repairs_that_only_repeat_old_code_stop_the_task(trusted_sandbox) -> None:
    model = sampling(BROKEN, repairs=[BROKEN, BROKEN + "  \n"])
    result = CodeAgent(model, trusted_sandbox, samples=1, max_attempts=5).invoke(
        {"instruction": "m", "tests": TESTS}
    )
    assert not result.passed and result.stop_reason == "repeated" and len(result.attempts) == 2
    assert len(result.candidates) == 2 and result.candidates[1].duplicate_of == 1


def test_the_budget_counts_rounds(trusted_sandbox) -> None:
    wrong = [f"def mean(xs):\n    return {i}\n" for i in range(10)]
    model = sampling(BROKEN, repairs=wrong)
    result = CodeAgent(model, trusted_sandbox, samples=1, max_attempts=3).invoke(
        {"instruction": "m", "tests": TESTS}
    )
    assert not result.passed and result.stop_reason == "budget" and len(result.attempts) == 3


def test_user_tests_with_setup_and_functions_decide(trusted_sandbox) -> None:
    tests = "import math\n\ndef test_empty():\n    assert mean([]) == 0.0\n\nassert math.isclose(mean([1, 2]), 1.5)\n"
    result = CodeAgent(scripted([("", fenced(FIXED))]), trusted_sandbox, samples=1).invoke(
        {"instruction": "mean", "tests": tests}
    )
    assert result.passed and result.verdict == "verified"
    assert [t.name for t in result.test_cases if t.name] == [
        "test_empty",
        "assert math.isclose(mean([1, 2]), 1.5)",
    ]
    broken = CodeAgent(scripted([("", fenced(BROKEN))]), trusted_sandbox, samples=1, max_attempts=1).invoke(
        {"instruction": "mean", "tests": tests}
    )
    assert not broken.passed and broken.verdict == "unverified"
    assert broken.candidates[0].statuses["test_empty"] == "error"


def test_without_tests_the_code_must_run_cleanly(trusted_sandbox) -> None:
    model = scripted([("NameError", fenced("print('hello')")), ("", fenced("print(hello)"))])
    result = CodeAgent(model, trusted_sandbox, samples=1).invoke("Print hello.")
    assert result.passed and result.check == "runs" and result.output.strip() == "hello"
    assert result.attempts[0].result.error.name == "NameError"


def test_reply_without_code_is_a_failure_not_a_pass(trusted_sandbox) -> None:
    model = scripted([("", "I cannot help with that.")])
    result = CodeAgent(model, trusted_sandbox, max_attempts=2).invoke("Print hello.")
    assert not result.passed and result.verdict == "unverified"


def test_events_stream_in_order(trusted_sandbox) -> None:
    model = scripted([("ZeroDivisionError", fenced(FIXED)), ("", fenced(BROKEN))])
    kinds = [
        e.kind
        for e in CodeAgent(model, trusted_sandbox, samples=1).events({"instruction": "m", "tests": TESTS})
    ]
    assert kinds == STEPS


def test_options_are_checked() -> None:
    model = scripted([("", "")])
    for bad in ({"samples": 0}, {"max_attempts": 0}, {"temperature": 0.0}, {"selection": "vote"}):
        with pytest.raises(ValueError):
            CodeAgent(model, None, **bad)  # type: ignore[arg-type]


def test_runnable_batch_and_composition(trusted_sandbox) -> None:
    from langchain_core.runnables import RunnableLambda

    agent = CodeAgent(scripted([("", fenced("def one():\n    return 1\n"))]), trusted_sandbox, samples=2)
    chain = agent | RunnableLambda(lambda r: r.passed)
    assert chain.batch(["Write one() returning 1.\n>>> one()\n1", "Write one()."]) == [True, True]


def test_empty_instruction_is_rejected(trusted_sandbox) -> None:
    with pytest.raises(ValueError, match="instruction is empty"):
        CodeAgent(scripted([("", "")]), trusted_sandbox).invoke("   ")


class CrashingSandbox(Sandbox):
    """Delegates to a real runner, but its server 'dies' on the first ``crashes`` runs."""

    name = "crashing"

    def __init__(self, inner: Sandbox, crashes: int) -> None:
        self.inner, self.crashes, self.calls = inner, crashes, 0
        self.lock = threading.Lock()

    def run(self, code, *, stdin=None, files=None, timeout=None) -> ExecResult:
        with self.lock:
            self.calls += 1
            crash = self.calls <= self.crashes
        if crash:
            return ExecResult(exit_code=None, error=ErrorInfo("SandboxCrashed", "server died", ""))
        return self.inner.run(code, stdin=stdin, files=files, timeout=timeout)


def test_a_sandbox_crash_is_retried_once_on_a_fresh_worker(trusted_sandbox) -> None:
    sandbox = CrashingSandbox(trusted_sandbox, crashes=1)
    result = CodeAgent(scripted([("", fenced(FIXED))]), sandbox, samples=1).invoke(
        {"instruction": "m", "tests": TESTS}
    )
    assert result.passed and sandbox.calls == 2 and len(result.attempts) == 1


def test_a_sandbox_that_keeps_crashing_stops_the_task(trusted_sandbox) -> None:
    model = scripted([("", fenced(FIXED))])
    result = CodeAgent(model, CrashingSandbox(trusted_sandbox, crashes=9), samples=1).invoke(
        {"instruction": "m", "tests": TESTS}
    )
    assert not result.passed and result.stop_reason == "sandbox-error" and result.verdict == "unverified"
    assert result.attempts[0].result.error.name == "SandboxError"
    assert len(model.prompts) == 1  # no repair was asked for a sandbox failure


def test_tokens_stream_to_the_callback_and_the_result_is_the_same(trusted_sandbox) -> None:
    model = scripted([("ZeroDivisionError", fenced(FIXED)), ("", fenced(BROKEN))])
    tokens: list[str] = []
    agent = CodeAgent(model, trusted_sandbox, samples=1)
    events = list(agent.events({"instruction": "m", "tests": TESTS}, on_token=tokens.append))
    result = events[-1].data["result"]
    assert result.passed and result.code == FIXED
    assert "".join(tokens) == fenced(BROKEN) + fenced(FIXED)  # the greedy draft and the first repair
    assert result.output_tokens > 0  # usage survives streaming


def test_result_records_every_candidate_and_test(trusted_sandbox) -> None:
    model = sampling(WRONG, code=[RIGHT], tests=[OWN_TESTS])
    row = CodeAgent(model, trusted_sandbox, samples=2, test_prompts=1).invoke(SQUARE).to_dict()
    assert row["verdict"] == "self-tested" and row["candidates"] == 2 and row["own_tests"] == 4
    assert [r["tests"] for r in row["candidate_runs"]] == ["FPFP", "PPPP"]
    assert (
        row["selection_detail"]["winner"] == 2
        and row["winner"] == 2
        and "(score 4, next 2)" in row["selection_detail"]["reason"]
    )
    assert row["summary"] == "2 candidates, 1 agree, 4/4 own tests: self-tested"


def test_samples_and_generate_tests_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from ragcoder.agent.config import ConfigError, resolve_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "none.toml"))
    assert resolve_config().samples == 4 and resolve_config().generate_tests is True
    monkeypatch.setenv("RAGCODER_SAMPLES", "8")
    monkeypatch.setenv("RAGCODER_GENERATE_TESTS", "off")
    assert resolve_config().samples == 8 and resolve_config().generate_tests is False
    assert resolve_config({"samples": 1}).samples == 1
    with pytest.raises(ConfigError, match=r"samples = 0 from flag: use an integer from 1 to 32"):
        resolve_config({"samples": "0"})
    assert resolve_config().always_sample is False
    monkeypatch.setenv("RAGCODER_ALWAYS_SAMPLE", "true")
    assert resolve_config().always_sample is True
    assert resolve_config().confirm_examples is False
    monkeypatch.setenv("RAGCODER_CONFIRM_EXAMPLES", "true")
    assert resolve_config().confirm_examples is True


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


def test_a_repair_reuses_its_first_attempts_prompt_with_a_real_model(model_tiny_dir, docker_sandbox) -> None:
    """The tiny random model writes no code, so every attempt fails and is repaired; the repair
    prompt repeats the task, and the model reads only what follows it."""
    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.chains.llm.prefix_cache import prefix_cache_for

    chat = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=16)
    prefix_cache_for(chat.llm.pipeline.model).clear()  # the model is shared with other tests
    agent = CodeAgent(chat, docker_sandbox, max_attempts=2, samples=1)
    result = agent.invoke(Task(id="m", instruction="Write mean(xs); 0.0 for an empty list.", tests=TESTS))
    first, repair = result.candidates
    assert repair.kind == "repair" and not repair.passed
    assert first.cached_tokens == 0 and 32 <= repair.cached_tokens < repair.input_tokens
    assert len(result.attempts) == 2  # the code held after each round


def test_an_example_of_another_name_is_not_a_hard_check(trusted_sandbox) -> None:
    # HumanEval/81's docstring calls grade_equation(); the function is numerical_letter_grade
    instruction = SQUARE + "\n\n>>> square(3)\n9\n>>> squared(2)\n4\n"
    result = CodeAgent(
        scripted([("", fenced(RIGHT))]), trusted_sandbox, samples=1, generate_tests=False
    ).invoke(instruction)
    assert result.passed and result.verdict == "verified" and result.tests == "assert square(3) == 9\n"
    assert result.notes == ["1 example(s) in the request do not call square: not used"]
