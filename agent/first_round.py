"""Round 1: the greedy candidate, then only what it takes to trust or replace it.

With the user's tests or the request's examples, the greedy candidate runs against them: passing,
it is the answer (but not verified if it raises on the examples' list inputs one item shorter);
else the other candidates and the model's tests are sampled in one batched call. With
``confirm_examples`` (off) a greedy answer that passed the examples also meets the model's tests
first (one reply): failing many, the others are sampled, the examples filter and the model's tests
rank (on dev: 0 of 16 tasks fixed at 5.5x the time; the model's tests fail right code as often as
wrong). With neither, the model's tests come first (one reply): a greedy candidate self-tested on
them is the answer, else the other candidates (and the other test replies) are sampled. Measured:
docs/results.md, session 12 and "2026-12-01, second stop".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ragcoder.agent import select
from ragcoder.agent.candidates import TESTS_ROUND, draft_from, elapsed_ms, sample_replies
from ragcoder.agent.checks import example_variants, own_test_cases, raised_on
from ragcoder.agent.result import Attempt, Origin, TestCase
from ragcoder.agent.tasks import Task
from ragcoder.chains.prompting.codegen import Draft, codegen_messages
from ragcoder.chains.prompting.test_gen import messages_for_tests

# a first candidate that is self-tested on fewer own tests than this is no reason to stop sampling
MIN_OWN_TESTS_TO_STOP = 3
FIRST_TEST_PROMPTS = 1  # without hard checks: replies asking for tests before deciding to sample
Drafted = tuple[Draft, Origin, int | None, float]  # a reply, how it was made, its seed, its time (ms)


class Agent(Protocol):
    """What round 1 needs of :class:`ragcoder.agent.loop.CodeAgent`."""

    codegen: Any  # the greedy chain
    sampler: Any  # the chat model sampled rows go to
    samples: int
    test_prompts: int
    temperature: float
    always_sample: bool
    check_variants: bool
    confirm_examples: bool

    def candidate_from(
        self,
        draft: Draft,
        origin: Origin,
        seed: int | None,
        gen_ms: float,
        number: int,
        index: int,
        task: Task,
    ) -> Attempt: ...

    def run_against(
        self, candidate: Attempt, tests: list[TestCase], probes: list[select.Probe], entry: str | None
    ) -> None: ...


@dataclass
class FirstRound:
    """Round 1's replies, and the greedy candidate's run when it already ran against every test."""

    drafts: list[Drafted]
    test_replies: list[Draft]
    probes: list[select.Probe]
    looked: Attempt | None = None
    raised_on_variants: list[str] = field(default_factory=list)  # the greedy code broke on these calls


def first_round(
    agent: Agent,
    task: Task,
    inputs: dict[str, Any],
    tests: list[TestCase],
    function: str | None,
    ask_tests: bool,
    entry: str | None,
    notes: list[str],
    emit: Callable[..., Any],
    on_token: Callable[[str], None] | None,
) -> Generator[Any, None, FirstRound]:
    """The greedy candidate (streamed), then what it takes (see the module's docstring).
    ``ask_tests``: the model writes tests of ``function``; they are added to ``tests``. The
    generator's return value holds the round's replies."""
    t0 = time.perf_counter()
    greedy = draft_from(agent.codegen, inputs, on_token)
    first = FirstRound([(greedy, "greedy", None, elapsed_ms(t0))], [], [])
    code_rows = [codegen_messages(inputs)] * (agent.samples - 1)
    test_rows = []
    if ask_tests and function is not None:
        test_rows = [messages_for_tests(task.instruction, function)] * agent.test_prompts
    if not agent.always_sample and tests and (code_rows or test_rows):
        looked = agent.candidate_from(greedy, "greedy", None, first.drafts[0][3], 1, 1, task)
        agent.run_against(looked, tests, [], entry)
        raised = _raised_on_variants(agent, greedy, tests, function, task) if looked.passed else []
        confirm = looked.passed and not raised and agent.confirm_examples and bool(test_rows)
        if looked.passed and not confirm:  # verified already: more candidates could only choose against it
            code_rows, test_rows, first.looked, first.raised_on_variants = [], [], looked, raised
            notes.append(
                f"the first candidate passed the examples but raised on {raised[0]}: not verified"
                if raised  # sampling others instead found no better answer on dev (docs/results.md)
                else f"the first candidate passed {select.hard_words(tests)}: no others sampled"
            )
        elif confirm:  # test_rows: the hard checks are examples, and there is a function to test
            assert function is not None
            passed, counted = yield from _greedy_on_own_tests(
                agent, task, tests, function, test_rows, entry, notes, emit, first
            )
            test_rows = test_rows[FIRST_TEST_PROMPTS:]
            # none written, or no reason to doubt the examples
            if passed >= select.SELF_TESTED_SHARE * counted:
                code_rows, test_rows = [], []
                own = f" and {passed}/{counted} own tests" if counted else ""
                notes.append(f"the first candidate passed the instruction's examples{own}: no others sampled")
            else:
                notes.append(
                    f"the first candidate passed the instruction's examples but only {passed}/{counted} "
                    "own tests: others sampled"
                )
    elif not agent.always_sample and test_rows:
        assert function is not None
        passed, counted = yield from _greedy_on_own_tests(
            agent, task, tests, function, test_rows, entry, notes, emit, first
        )
        test_rows = test_rows[FIRST_TEST_PROMPTS:]
        if counted >= MIN_OWN_TESTS_TO_STOP and select.verdict_for(first.looked, tests) == "self-tested":
            code_rows, test_rows = [], []
            notes.append(f"the first candidate passed {passed}/{counted} own tests: no others sampled")
    if code_rows or test_rows:
        t1 = time.perf_counter()
        sampled, seeds = sample_replies(
            agent.sampler, code_rows + test_rows, task.instruction, agent.temperature
        )
        for draft, seed in zip(sampled[: len(code_rows)], seeds, strict=False):
            first.drafts.append((draft, "sampled", seed, elapsed_ms(t1)))
        later = sampled[len(code_rows) :]
        first.test_replies += later
        if ask_tests and function is not None and later:
            first.looked = None  # it runs again, against the new tests too
            tests += own_test_cases(later, function, task.instruction, tests)
            yield emit("tests", 1, tests=tests, function=function, notes=notes)
            first.probes = select.probes_for(tests, function)
    if first.test_replies and not any(t.origin == "generated" for t in tests):
        notes.append(f"the model wrote no usable tests for {function}")
    return first


def _greedy_on_own_tests(
    agent: Agent,
    task: Task,
    tests: list[TestCase],
    function: str,
    test_rows: list[Any],
    entry: str | None,
    notes: list[str],
    emit: Callable[..., Any],
    first: FirstRound,
) -> Generator[Any, None, tuple[int, int]]:
    """One test reply first (the rest only if it samples), then the greedy candidate against every
    test so far: (own tests passed, own tests counted)."""
    first.test_replies, _ = sample_replies(
        agent.sampler, test_rows[:FIRST_TEST_PROMPTS], task.instruction, agent.temperature, TESTS_ROUND
    )
    tests += own_test_cases(first.test_replies, function, task.instruction, tests)
    yield emit("tests", 1, tests=tests, function=function, notes=notes)
    first.probes = select.probes_for(tests, function)
    first.looked = agent.candidate_from(first.drafts[0][0], "greedy", None, first.drafts[0][3], 1, 1, task)
    agent.run_against(first.looked, tests, first.probes, entry)
    return select.own_tests_passed(first.looked, tests)


def _raised_on_variants(
    agent: Agent, greedy: Draft, tests: list[TestCase], function: str | None, task: Task
) -> list[str]:
    """The calls like the examples' (a list one item shorter) that the greedy code raised on."""
    examples = [t for t in tests if t.origin == "example"]
    variants = example_variants(examples, function) if agent.check_variants and function else []
    if not variants:
        return []
    probe = agent.candidate_from(greedy, "greedy", None, 0.0, 1, 1, task)
    agent.run_against(probe, [], variants, None)
    return raised_on(probe.outputs, variants)
