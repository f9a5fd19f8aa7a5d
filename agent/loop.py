"""The agent: retrieve -> generate candidates and tests -> run them all -> select -> repair.

Each round makes ``samples`` candidates in one batched generation (the greedy one, streamed, plus
sampled ones seeded by the task and round, so a rerun repeats them). With no tests from the user,
the model writes some in the same batch (:mod:`ragcoder.chains.prompting.test_gen`). Every
candidate runs against every test in one sandbox request each, and :mod:`ragcoder.agent.select`
chooses: the hard checks (the user's tests, else the instruction's examples, else running
cleanly) filter, the model's own tests rank. Only when no candidate passes the hard checks is
there a repair round, sampled too; code already run is never run again. The result's
``verdict`` says how far the code was checked.

``CodeAgent`` is a LangChain Runnable (``invoke``/``batch``/``ainvoke``/``stream``/``as_tool``, an
input schema, steps as custom events: :mod:`ragcoder.agent.runnable`), so it composes in LCEL chains;
``events()`` yields what happens as it happens (for the chat UI and progress).
Any chat model, any retriever and any :class:`sandbox.Sandbox` can be injected.
"""

from __future__ import annotations

import inspect
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from ragcoder.agent import select
from ragcoder.agent.checks import extract_example_tests
from ragcoder.agent.defaults import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_SAMPLES,
    DEFAULT_STUCK_TEMPERATURE,
    check_stuck_temperature,
)
from ragcoder.agent.feedback import feedback_for_candidate
from ragcoder.agent.prelude import add_missing_prelude, instruction_prelude
from ragcoder.agent.result import AgentResult, Attempt, CheckKind, Origin, StopReason, TestCase
from ragcoder.agent.runnable import AgentRunnable
from ragcoder.agent.tasks import Task
from ragcoder.chains.prompting.codegen import (
    Draft,
    codegen_chain,
    codegen_messages,
    draft_from_reply,
    repair_chain,
)
from ragcoder.chains.prompting.prompts import format_source
from ragcoder.chains.prompting.test_gen import (
    find_function_name,
    messages_for_tests,
    parse_generated_tests,
    usable_test,
)
from ragcoder.chains.retrieval.gate import RetrievalDecision
from ragcoder.sandbox import Sandbox

EventKind = Literal["retrieved", "tests", "generated", "ran", "selected", "failed", "repairing", "done"]
DEFAULT_TEMPERATURE = 0.8  # for sampled candidates, tests and repairs (Chen et al. 2021; CodeT)
DEFAULT_TEST_PROMPTS = 2  # sampled replies asking for tests, batched with the candidates
MAX_BATCH_ROWS = 8  # rows per sampled call: the local model's batch size (more rows, another seed)


@dataclass
class AgentEvent:
    kind: EventKind
    attempt: int = 0  # the round
    data: dict[str, Any] = field(default_factory=dict)


class _TokenForwarder(BaseCallbackHandler):
    """Hands each streamed token to a plain callback."""

    def __init__(self, on_token: Callable[[str], None]) -> None:
        self.on_token = on_token

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.on_token(token)


def _filters_corpus(retriever: BaseRetriever) -> bool:
    """Whether the retriever takes ``exclude_corpus`` (ragcoder's does; a vector store's retriever
    hands unknown keywords on to its store's search, which rejects them)."""
    search = getattr(retriever, "_get_relevant_documents", None)
    return search is not None and "exclude_corpus" in inspect.signature(search).parameters


def normalise(code: str) -> str:
    """Code as compared for repeats: trailing spaces and blank ends ignored."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def seed_for(instruction: str, round_number: int, row: int) -> int:
    """The sampling seed of one call: the same task, round and row always sample alike."""
    return (zlib.crc32(instruction.encode("utf-8")) + 1000 * round_number + row) % 2**31


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
        retrieval_gate: Callable[[str], RetrievalDecision] | None = None,
    ) -> None:
        """``max_attempts``: rounds (the first generation, then repair rounds). ``samples``:
        candidates per round. ``temperature``: for the sampled candidates and tests;
        ``stuck_temperature`` for repairs (default: the same). ``generate_tests``: let the model
        write tests when the user gives none. ``test_timeout``: seconds per test. ``selection``:
        "codet" or "mbr". ``always_sample``: sample ``samples`` candidates even when the greedy one
        passes the user's tests or the instruction's examples (by default it is then the answer).
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
        self.set_model(model, repair_model)

    def set_model(self, model: Runnable, repair_model: Runnable | None = None) -> None:
        """Switch the chat model (and the one used for repairs) for the next instructions."""
        from ragcoder.agent.microbatch import MicroBatchingChatModel

        self.model = model
        self._codegen = codegen_chain(model)
        self._repair_model = repair_model or model
        # sampled rows go to the model itself in one call: in a shared micro-batch their seed
        # would draw differently with each batch's company
        self._sampler = model.inner if isinstance(model, MicroBatchingChatModel) else model

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

        docs, retrieval = self._retrieve(task.instruction)
        sources = [format_source(d) for d in docs]
        yield emit("retrieved", docs=docs, sources=sources, retrieval=retrieval)

        function = find_function_name(task.instruction, task.entry_point)
        notes: list[str] = []
        hard_source, check = self._checks(task, function, notes)
        tests = self._hard_cases(task, hard_source, check)
        inputs: dict[str, Any] = {"instruction": task.instruction, "docs": docs, "tests": hard_source}
        ask_tests = self.generate_tests and check != "tests"
        if ask_tests and function is None:
            notes.append("the request names no function, so no tests were generated")

        entry = task.entry_point if check == "tests" else None
        # round 1: the greedy candidate (streamed), then sampled candidates and tests in one batch
        t0 = time.perf_counter()
        greedy = self._draft(self._codegen, inputs, on_token)
        drafts: list[tuple[Draft, Origin, int | None, float]] = [(greedy, "greedy", None, self._ms(t0))]
        test_replies: list[Draft] = []
        rows = [codegen_messages(inputs)] * (self.samples - 1)
        if ask_tests and function is not None:
            rows += [messages_for_tests(task.instruction, function)] * self.test_prompts
        looked: Attempt | None = None  # the greedy candidate, run against the hard checks alone
        if rows and tests and not self.always_sample:
            looked = self._candidate(greedy, "greedy", None, drafts[0][3], 1, 1, task)
            t1 = time.perf_counter()
            select.run_candidate(
                self.sandbox,
                looked,
                tests,
                [],
                entry_point=entry,
                test_timeout=self.test_timeout,
                timeout=self.timeout,
            )
            looked.run_ms = self._ms(t1)
            if looked.passed:  # verified already: more candidates could only choose against it
                rows = []
                notes.append(f"the first candidate passed {select.hard_words(tests)}: no others sampled")
        if rows:
            t1 = time.perf_counter()
            sampled, seeds = self._sample(rows, task.instruction)
            for draft, seed in zip(sampled[: self.samples - 1], seeds, strict=False):
                drafts.append((draft, "sampled", seed, self._ms(t1)))
            test_replies = sampled[self.samples - 1 :]
        test_tokens = (
            sum(d["input_tokens"] for d in test_replies),
            sum(d["output_tokens"] for d in test_replies),
        )
        if function is not None and test_replies:
            tests += self._generated_cases(test_replies, function, task.instruction, tests, notes)
            yield emit("tests", 1, tests=tests, function=function, notes=notes)
        probes = select.probes_for(tests, function) if function else []

        candidates: list[Attempt] = []
        seen: dict[str, int] = {}  # normalised code -> the candidate that ran it
        attempts: list[Attempt] = []
        stop: StopReason = "budget"
        selection = None
        for number in range(1, self.max_attempts + 1):
            fresh = 0
            first = len(candidates) + 1  # the round's first candidate: a chat shows its code in full
            for draft, origin, seed, gen_ms in drafts:
                candidate = self._candidate(draft, origin, seed, gen_ms, number, len(candidates) + 1, task)
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
                    self._copy_run(candidate, candidates[seen[key] - 1])
                    continue
                seen[key] = candidate.candidate
                fresh += 1
                t2 = time.perf_counter()
                if looked is not None and looked.passed and candidate.candidate == 1:  # ran just now
                    self._copy_run(candidate, looked)
                    candidate.duplicate_of, candidate.run_ms = None, looked.run_ms
                    yield emit(
                        "ran",
                        number,
                        result=candidate.result,
                        report=candidate.report,
                        passed=candidate.passed,
                        candidate=1,
                        first=True,
                    )
                    continue
                select.run_candidate(
                    self.sandbox,
                    candidate,
                    tests,
                    probes,
                    entry_point=entry,
                    test_timeout=self.test_timeout,
                    timeout=self.timeout,
                )
                candidate.run_ms = self._ms(t2)
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
            hard_names = {t.name for t in tests if t.name and t.origin != "generated"}
            for c in runs:
                if not c.feedback:
                    c.feedback = feedback_for_candidate(c, hard_names)
                    if c.result.missing:
                        c.feedback = f"{c.result.missing}\n{c.feedback}"
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
            drafts = list(self._repairs(runs, weights, tests, inputs, task.instruction, number + 1, on_token))

        assert selection is not None
        winner = candidates[selection.winner - 1]
        if any(t.dropped for t in tests):
            notes.append(
                f"{sum(bool(t.dropped) for t in tests)} generated test(s) dropped: they hung or "
                "raised for every candidate"
            )
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
            total_ms=self._ms(started),
            verdict=select.verdict_for(winner, tests),
            candidates=candidates,
            test_cases=tests,
            selection=selection,
            function=function,
            notes=notes,
            test_tokens=test_tokens,
        )
        yield emit("done", attempts[-1].number, result=result)

    # -- the pieces ----------------------------------------------------------------------------
    @staticmethod
    def _ms(since: float) -> float:
        return (time.perf_counter() - since) * 1000

    def _sample(
        self, rows: list[list[Any]], instruction: str, number: int = 1
    ) -> tuple[list[Draft], list[int]]:
        """Sampled replies to ``rows`` (chat messages), at most MAX_BATCH_ROWS per seeded call."""
        drafts: list[Draft] = []
        seeds: list[int] = []
        for start in range(0, len(rows), MAX_BATCH_ROWS):
            seed = seed_for(instruction, number, start)
            chunk = rows[start : start + MAX_BATCH_ROWS]
            replies = self._sampler.bind(temperature=self.temperature, seed=seed).batch(chunk)
            drafts += [draft_from_reply(r) for r in replies]
            seeds += [seed] * len(chunk)
        return drafts, seeds

    def _generated_cases(
        self, replies: list[Draft], function: str, instruction: str, known: list[TestCase], notes: list[str]
    ) -> list[TestCase]:
        allowed = set().union(*(names for _, names in instruction_prelude(instruction)))
        lines: list[str] = []
        for reply in replies:
            lines += [t for t in parse_generated_tests(reply["reply"], function, allowed) if t not in lines]
        given = {
            usable_test(k.name, function, allowed, None) or k.name for k in known
        }  # as parsed, to compare
        cases = select.assert_cases([line for line in lines if line not in given], "generated")
        if not cases:
            notes.append(f"the model wrote no usable tests for {function}")
        return cases

    def _candidate(
        self,
        draft: Draft,
        origin: Origin,
        seed: int | None,
        gen_ms: float,
        number: int,
        index: int,
        task: Task,
    ) -> Attempt:
        from ragcoder.sandbox import ExecResult

        return Attempt(
            number=number,
            kind="repair" if origin == "repair" else "generate",
            code=add_missing_prelude(draft["code"], task.instruction),
            result=ExecResult(exit_code=None),
            passed=False,
            generate_ms=gen_ms,
            input_tokens=draft["input_tokens"],
            output_tokens=draft["output_tokens"],
            cached_tokens=draft.get("cached_tokens", 0),
            temperature=None
            if origin == "greedy"
            else (self.temperature if origin == "sampled" else self.repair_temperature),
            candidate=index,
            origin=origin,
            seed=seed,
        )

    @staticmethod
    def _copy_run(candidate: Attempt, original: Attempt) -> None:
        candidate.duplicate_of = original.candidate
        candidate.result, candidate.report, candidate.passed = (
            original.result,
            original.report,
            original.passed,
        )
        candidate.statuses, candidate.outputs = original.statuses, original.outputs

    def _repairs(
        self,
        runs: list[Attempt],
        weights: dict[int, int],
        tests: list[TestCase],
        inputs: dict[str, Any],
        instruction: str,
        number: int,
        on_token: Callable[[str], None] | None,
    ) -> Iterator[tuple[Draft, Origin, int, float]]:
        """``samples`` sampled repairs, of the failing candidates closest to passing (in turn)."""
        hard = [t for t in tests if t.name and t.origin != "generated"]
        counted = [t.name for t in tests if t.origin == "generated" and not t.dropped]

        def closeness(c: Attempt) -> tuple:
            own = sum(c.statuses.get(n) == "pass" for n in counted)
            return (
                -sum(c.statuses.get(t.name) == "pass" for t in hard),
                -bool(c.statuses),
                -own,
                -weights.get(c.candidate, 1),
                c.candidate,
            )

        targets = sorted(runs, key=closeness)[: self.samples]
        for row in range(self.samples):
            target = targets[row % len(targets)]
            seed = seed_for(instruction, number, row)
            bound = self._repair_model.bind(temperature=self.repair_temperature, seed=seed)
            t0 = time.perf_counter()
            draft = self._draft(
                repair_chain(bound),
                {**inputs, "code": target.code, "feedback": target.feedback},
                on_token if row == 0 else None,
            )
            yield draft, "repair", seed, self._ms(t0)

    @staticmethod
    def _draft(chain: Runnable, inputs: dict[str, Any], on_token: Callable[[str], None] | None) -> Draft:
        if on_token is None:
            return chain.invoke(inputs)
        draft: Draft | None = None
        for chunk in chain.stream(inputs, config={"callbacks": [_TokenForwarder(on_token)]}):
            draft = chunk
        assert draft is not None
        return draft

    def _retrieve(self, instruction: str) -> tuple[list[Document], str]:
        """The docs for the prompt, and what was done to get them (for the trace)."""
        if self.retriever is None:
            return [], "off"
        if self.retrieval_gate is not None:
            decision = self.retrieval_gate(instruction)
            if not decision.retrieve:
                return [], f"skipped: {decision.reason}"
            if decision.stdlib:
                docs = list(self.retriever.invoke(instruction))
            else:  # our retriever leaves the corpus out of its search; others are filtered after
                leave_out = {"exclude_corpus": "stdlib"} if _filters_corpus(self.retriever) else {}
                found = self.retriever.invoke(instruction, **leave_out)
                docs = [d for d in found if d.metadata.get("corpus") != "stdlib"]
            return docs, f"{len(docs)} doc(s): {decision.reason}"
        docs = list(self.retriever.invoke(instruction))
        return docs, f"{len(docs)} doc(s)"

    @staticmethod
    def _checks(task: Task, function: str | None, notes: list[str]) -> tuple[str | None, CheckKind]:
        """The user's tests, else the instruction's examples of ``function``, else none."""
        if task.tests and task.tests.strip():
            return task.tests, "tests"
        found = (extract_example_tests(task.instruction) or "").splitlines()
        if function is not None:  # an example of another name (a typo in the docs) can only raise NameError
            allowed = set().union(*(names for _, names in instruction_prelude(task.instruction)))
            kept = [line for line in found if usable_test(line, function, allowed, max_chars=None)]
            if len(kept) < len(found):
                notes.append(
                    f"{len(found) - len(kept)} example(s) in the request do not call {function}: not used"
                )
            found = kept
        if found:
            return "\n".join(found) + "\n", "examples"
        return None, "runs"

    @staticmethod
    def _hard_cases(task: Task, source: str | None, check: CheckKind) -> list[TestCase]:
        if check == "tests" and source:
            return select.user_test_cases(source, task.entry_point)
        if check == "examples" and source:
            return select.assert_cases(source.splitlines(), "example")
        return []

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> CodeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
