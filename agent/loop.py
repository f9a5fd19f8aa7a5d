"""The agent: retrieve -> generate candidates and tests -> run them all -> select -> repair.

Round 1 (:mod:`ragcoder.agent.first_round`) makes the greedy candidate and samples more
candidates (seeded by task and round, so a rerun repeats them) and the model's own tests
(:mod:`ragcoder.chains.prompting.test_gen`) only when the greedy one is not already checked by the
user's tests, the request's examples or, with neither, its own tests. Every candidate runs against
every test in one sandbox request, and :mod:`ragcoder.agent.select` chooses: the hard checks (user
tests, else examples, else running cleanly) filter, the model's tests rank. Only when no candidate
passes the hard checks is there a (sampled) repair round; code already run is never run again.
The result's ``verdict`` says how far the code was checked.

``CodeAgent`` is a LangChain Runnable (``invoke``/``batch``/``ainvoke``/``stream``/``as_tool``, an
input schema, steps as custom events: :mod:`ragcoder.agent.runnable`), so it composes in LCEL chains;
``events()`` yields what happens as it happens (for the chat UI and progress).
Any chat model, any retriever and any :class:`sandbox.Sandbox` can be injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from ragcoder.agent import select
from ragcoder.agent.candidates import (
    copy_run,
    elapsed_ms,
    new_candidate,
    normalise,
    repair_drafts,
    set_repair_feedback,
)
from ragcoder.agent.checks import hard_cases, hard_checks
from ragcoder.agent.defaults import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_SAMPLES,
    DEFAULT_STUCK_TEMPERATURE,
    check_stuck_temperature,
)
from ragcoder.agent.first_round import first_round
from ragcoder.agent.prompt_docs import docs_for_prompt
from ragcoder.agent.result import AgentResult, Attempt, Origin, StopReason, TestCase
from ragcoder.agent.runnable import AgentRunnable
from ragcoder.agent.tasks import Task
from ragcoder.chains.prompting.codegen import Draft, codegen_chain
from ragcoder.chains.prompting.prompts import format_source
from ragcoder.chains.prompting.test_gen import find_function_name
from ragcoder.chains.retrieval.gate import RetrievalDecision
from ragcoder.sandbox import Sandbox

EventKind = Literal["retrieved", "tests", "generated", "ran", "selected", "failed", "repairing", "done"]
DEFAULT_TEMPERATURE = 0.8  # for sampled candidates, tests and repairs (Chen et al. 2021; CodeT)
DEFAULT_TEST_PROMPTS = 2  # sampled replies asking for tests, batched with the candidates


@dataclass
class AgentEvent:
    kind: EventKind
    attempt: int = 0  # the round
    data: dict[str, Any] = field(default_factory=dict)


class CodeAgent(AgentRunnable):
    """Turns an instruction (str, dict or :class:`Task`) into checked code (:class:`AgentResult`)."""

    def __init__(
        self,
        model: Runnable,
        sandbox: Sandbox,
        *,
        retriever: BaseRetriever | None = None,
        repair_model: Runnable | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float | None = None,
        samples: int = DEFAULT_SAMPLES,
        temperature: float = DEFAULT_TEMPERATURE,
        stuck_temperature: float | None = DEFAULT_STUCK_TEMPERATURE,
        generate_tests: bool = True,
        test_prompts: int = DEFAULT_TEST_PROMPTS,
        test_timeout: float = select.DEFAULT_TEST_TIMEOUT_S,
        selection: str = "codet",
        always_sample: bool = False,
        check_variants: bool = True,
        confirm_examples: bool = False,
        retrieval_gate: Callable[[str], RetrievalDecision] | None = None,
    ) -> None:
        """``max_attempts``: rounds (the first generation, then repair rounds). ``samples``:
        candidates per round. ``temperature``: for the sampled candidates and tests;
        ``stuck_temperature`` for repairs (default: the same). ``generate_tests``: let the model
        write tests when the user gives none. ``test_timeout``: seconds per test. ``selection``:
        "codet" or "mbr". ``always_sample``: sample ``samples`` candidates, and the tests with them,
        even when the greedy one passes the user's tests, the instruction's examples or (with
        neither) its own tests (by default it is then the answer).
        ``check_variants``: a greedy candidate that passes the examples is also run on the examples'
        calls with a list one item shorter, and if it raises there, it is not called verified.
        ``confirm_examples``: a greedy candidate that passes the instruction's examples also runs
        the model's tests (one reply); failing more than a fifth of them, the others are sampled.
        ``retrieval_gate`` decides per instruction whether to query
        ``retriever`` (e.g. :func:`ragcoder.chains.retrieval.gate.decide_retrieval`); without
        one, every instruction is."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if samples < 1:
            raise ValueError("samples must be at least 1")
        if not temperature > 0:
            raise ValueError("temperature must be > 0 (sampled candidates and repairs need it)")
        if selection not in select.SELECTION_METHODS:
            raise ValueError(f"selection {selection!r}: choose one of {', '.join(select.SELECTION_METHODS)}")
        self.stuck_temperature = check_stuck_temperature(stuck_temperature)
        self.sandbox = sandbox
        self.retriever = retriever
        self.retrieval_gate = retrieval_gate
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.samples = samples
        self.temperature = temperature
        self.repair_temperature = self.stuck_temperature or temperature
        self.generate_tests = generate_tests
        self.test_prompts = test_prompts
        self.test_timeout = test_timeout
        self.selection = selection
        self.always_sample = always_sample
        self.check_variants = check_variants
        self.confirm_examples = confirm_examples
        self.set_model(model, repair_model)

    def set_model(self, model: Runnable, repair_model: Runnable | None = None) -> None:
        """Switch the chat model (and the one used for repairs) for the next instructions."""
        from ragcoder.agent.microbatch import MicroBatchingChatModel

        self.model = model
        self.codegen = codegen_chain(model)
        self._repair_model = repair_model or model
        # sampled rows go to the model itself in one call (row i samples with seed + i, the same
        # in any batch; a micro-batch would only wait for company they cannot share a call with)
        self.sampler = model.inner if isinstance(model, MicroBatchingChatModel) else model

    # -- the loop -----------------------------------------------------------------------------
    def events(
        self,
        input: Any,
        *,
        on_event: Callable[[AgentEvent], None] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Iterator[AgentEvent]:
        """Run the loop, yielding an event at each step; the last one is ``done`` with the result.

        ``on_token`` receives the greedy candidate's text as the model streams it.
        """
        task = Task.coerce(input)
        started = time.perf_counter()

        def emit(kind: EventKind, attempt: int = 0, **data: Any) -> AgentEvent:
            event = AgentEvent(kind, attempt, data)
            if on_event is not None:
                on_event(event)
            return event

        docs, retrieval = docs_for_prompt(self.retriever, self.retrieval_gate, task.instruction)
        sources = [format_source(d) for d in docs]
        yield emit("retrieved", docs=docs, sources=sources, retrieval=retrieval)

        function = find_function_name(task.instruction, task.entry_point)
        notes: list[str] = []
        hard_source, check = hard_checks(task, function, notes)
        tests = hard_cases(task, hard_source, check)
        inputs: dict[str, Any] = {"instruction": task.instruction, "docs": docs, "tests": hard_source}
        ask_tests = self.generate_tests and check != "tests"
        if ask_tests and function is None:
            notes.append("the request names no function, so no tests were generated")
        entry = task.entry_point if check == "tests" else None
        opening = yield from first_round(
            self, task, inputs, tests, function, ask_tests, entry, notes, emit, on_token
        )
        drafts, probes, looked = opening.drafts, opening.probes, opening.looked
        test_tokens = (
            sum(d["input_tokens"] for d in opening.test_replies),
            sum(d["output_tokens"] for d in opening.test_replies),
        )

        candidates: list[Attempt] = []
        seen: dict[str, int] = {}  # normalised code -> the candidate that ran it
        attempts: list[Attempt] = []
        stop: StopReason = "budget"
        selection = None
        for number in range(1, self.max_attempts + 1):
            fresh = 0
            first = len(candidates) + 1  # the round's first candidate: a chat shows its code in full
            for draft, origin, seed, gen_ms in drafts:
                candidate = self.candidate_from(
                    draft, origin, seed, gen_ms, number, len(candidates) + 1, task
                )
                candidates.append(candidate)
                yield emit(
                    "generated",
                    number,
                    code=candidate.code,
                    step=candidate.kind,
                    reply=draft["reply"],
                    candidate=candidate.candidate,
                    origin=origin,
                    of=len(drafts),
                    first=candidate.candidate == first,
                )
                key = normalise(candidate.code)
                if key in seen:  # never run the same code twice: it would fail the same way
                    copy_run(candidate, candidates[seen[key] - 1])
                    continue
                seen[key] = candidate.candidate
                fresh += 1
                if looked is not None and candidate.candidate == 1:  # it ran against every test already
                    copy_run(candidate, looked)
                    candidate.duplicate_of, candidate.run_ms = None, looked.run_ms
                else:
                    self.run_against(candidate, tests, probes, entry)
                yield emit(
                    "ran",
                    number,
                    result=candidate.result,
                    report=candidate.report,
                    passed=candidate.passed,
                    candidate=candidate.candidate,
                    first=candidate.candidate == first,
                )
            runs = [c for c in candidates if c.duplicate_of is None]
            select.drop_broken_tests(tests, runs)
            weights = {
                c.candidate: sum(seen[normalise(d.code)] == c.candidate for d in candidates) for c in runs
            }
            selection = select.choose(runs, weights, tests, self.selection)
            winner = candidates[selection.winner - 1]
            attempts.append(winner)
            yield emit(
                "selected",
                number,
                selection=selection,
                winner=winner,
                shown=winner.candidate == first or winner.number < number,
            )
            if winner.passed:
                stop = "passed"
                break
            new = [c for c in candidates if c.number == number]
            if fresh == 0:
                stop = "empty" if not any(c.code.strip() for c in new) else "repeated"
                break
            set_repair_feedback(runs, tests)
            yield emit("failed", number, feedback=winner.feedback)
            ran = [c for c in new if c.duplicate_of is None]
            if all(c.result.error is not None and c.result.error.name == "SandboxError" for c in ran):
                stop = "sandbox-error"
                break
            if all(c.result.missing for c in ran):  # no repair can install a package: say what to do
                stop = "missing-package"
                break
            if number == self.max_attempts:
                break
            yield emit("repairing", number + 1)
            drafts = list(
                repair_drafts(
                    self._repair_model,
                    runs,
                    weights,
                    tests,
                    inputs,
                    count=self.samples,
                    temperature=self.repair_temperature,
                    number=number + 1,
                    on_token=on_token,
                )
            )

        assert selection is not None
        winner = candidates[selection.winner - 1]
        if any(t.dropped for t in tests):
            notes.append(
                f"{sum(bool(t.dropped) for t in tests)} generated test(s) dropped: they hung or "
                "raised for every candidate"
            )
        verdict = select.verdict_for(winner, tests)
        if opening.raised_on_variants and winner.candidate == 1:  # right on the examples only
            verdict = "unverified"
        result = AgentResult(
            instruction=task.instruction,
            code=winner.code,
            passed=winner.passed,
            check=check,
            stop_reason=stop,
            attempts=attempts,
            sources=sources,
            retrieval=retrieval,
            tests=hard_source,
            total_ms=elapsed_ms(started),
            verdict=verdict,
            candidates=candidates,
            test_cases=tests,
            selection=selection,
            function=function,
            notes=notes,
            test_tokens=test_tokens,
        )
        yield emit("done", attempts[-1].number, result=result)

    # -- the pieces ----------------------------------------------------------------------------
    def run_against(
        self, candidate: Attempt, tests: list[TestCase], probes: list[select.Probe], entry: str | None
    ) -> None:
        t0 = time.perf_counter()
        select.run_candidate(
            self.sandbox,
            candidate,
            tests,
            probes,
            entry_point=entry,
            test_timeout=self.test_timeout,
            timeout=self.timeout,
        )
        candidate.run_ms = elapsed_ms(t0)

    def candidate_from(
        self,
        draft: Draft,
        origin: Origin,
        seed: int | None,
        gen_ms: float,
        number: int,
        index: int,
        task: Task,
    ) -> Attempt:
        temperature = {"greedy": None, "sampled": self.temperature}.get(origin, self.repair_temperature)
        return new_candidate(draft, origin, seed, gen_ms, number, index, task.instruction, temperature)

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> CodeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
