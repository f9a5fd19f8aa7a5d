"""The agent: retrieve -> generate -> run in the sandbox -> check -> repair, until it passes.

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
from ragcoder.agent.checks import extract_example_tests
from ragcoder.agent.defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_STUCK_TEMPERATURE, check_stuck_temperature
from ragcoder.agent.feedback import feedback_for_run, feedback_for_tests
from ragcoder.agent.prelude import add_missing_prelude
from ragcoder.agent.result import AgentResult, Attempt, CheckKind, StopReason
from ragcoder.agent.runnable import AgentRunnable, traced_call
from ragcoder.agent.tasks import Task
from ragcoder.chains.prompting.codegen import Draft, codegen_chain, repair_chain
from ragcoder.chains.prompting.prompts import format_source
from ragcoder.chains.retrieval.gate import RetrievalDecision
from ragcoder.sandbox import ErrorInfo, ExecResult, Sandbox, SandboxError, TestReport

EventKind = Literal["retrieved", "generated", "ran", "failed", "repairing", "done"]
REPEATED_NOTE = (
    "Your last answer repeated code that had already failed. Write a different, corrected version."
)


@dataclass
class AgentEvent:
    kind: EventKind
    attempt: int = 0
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


def _normalise(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


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
        stuck_temperature: float | None = DEFAULT_STUCK_TEMPERATURE,
        retrieval_gate: Callable[[str], RetrievalDecision] | None = None,
    ) -> None:
        """``retrieval_gate`` decides per instruction whether to query ``retriever`` (e.g.
        :func:`ragcoder.chains.retrieval.gate.decide_retrieval`); without one, every instruction is."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.stuck_temperature = check_stuck_temperature(stuck_temperature)
        self.sandbox = sandbox
        self.retriever = retriever
        self.retrieval_gate = retrieval_gate
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.set_model(model, repair_model)

    def set_model(self, model: Runnable, repair_model: Runnable | None = None) -> None:
        """Switch the chat model (and the one used for repairs) for the next instructions."""
        self.model = model
        self._codegen = codegen_chain(model)
        self._repair_model = repair_model or model
        self._repair = repair_chain(self._repair_model)

    # -- the loop -----------------------------------------------------------------------------
    def events(
        self,
        input: Any,
        *,
        on_event: Callable[[AgentEvent], None] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Iterator[AgentEvent]:
        """Run the loop, yielding an event at each step; the last one is ``done`` with the result.

        ``on_token`` receives generated text as the model streams it (for a live display).
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

        tests, check = self._checks(task)
        attempts: list[Attempt] = []
        seen: set[str] = set()
        seen_feedback: set[str] = set()
        nudged = False
        temperature: float | None = None  # of the draft being checked; None: greedy
        inputs: dict[str, Any] = {"instruction": task.instruction, "docs": docs, "tests": tests}
        stop: StopReason = "budget"
        draft_kind: Literal["generate", "repair"] = "generate"
        t0 = time.perf_counter()
        draft: Draft = self._draft(self._codegen, inputs, on_token)
        for number in range(1, self.max_attempts + 1):
            gen_ms = (time.perf_counter() - t0) * 1000
            code = add_missing_prelude(draft["code"], task.instruction)
            yield emit("generated", number, code=code, step=draft_kind, reply=draft["reply"])
            t1 = time.perf_counter()
            if code.strip():
                result, report = self._check(code, tests, task.entry_point)
            else:
                empty = ErrorInfo(name="NoCode", value="the reply contained no Python code", traceback="")
                result, report = ExecResult(exit_code=None, error=empty), None
            run_ms = (time.perf_counter() - t1) * 1000
            passed = report.passed if report is not None else result.ok
            attempt = Attempt(
                number=number,
                kind=draft_kind,
                code=code,
                result=result,
                passed=passed,
                report=report,
                generate_ms=gen_ms,
                run_ms=run_ms,
                input_tokens=draft["input_tokens"],
                output_tokens=draft["output_tokens"],
                cached_tokens=draft.get("cached_tokens", 0),
                temperature=temperature,
            )
            attempts.append(attempt)
            yield emit("ran", number, result=result, report=report, passed=passed)
            if passed:
                stop = "passed"
                break
            attempt.feedback = feedback_for_tests(report) if report is not None else feedback_for_run(result)
            if result.missing:
                attempt.feedback = f"{result.missing}\n{attempt.feedback}"
            yield emit("failed", number, feedback=attempt.feedback)
            if result.error is not None and result.error.name == "SandboxError":
                stop = "sandbox-error"
                break
            if result.missing:  # no repair can install a package: say what to do instead
                stop = "missing-package"
                break
            key = _normalise(code)
            stuck = key in seen or attempt.feedback in seen_feedback  # failed just as before
            seen_feedback.add(attempt.feedback)
            if key in seen:
                # it repeated itself even after being told (and, when allowed, even sampling): stop
                if not key or (nudged and (self.stuck_temperature is None or temperature is not None)):
                    stop = "empty" if not key else "repeated"
                    break
                if not nudged:
                    nudged = True  # once: say so, which also changes the model's prompt
                    attempt.feedback += f"\n\n{REPEATED_NOTE}"
            seen.add(key)
            if number == self.max_attempts:
                break
            yield emit("repairing", number + 1)
            draft_kind = "repair"
            temperature = self.stuck_temperature if stuck else None
            t0 = time.perf_counter()
            draft = self._draft(
                self._repair_chain(task.instruction, number + 1, temperature),
                {**inputs, "code": code, "feedback": attempt.feedback},
                on_token,
            )

        final = attempts[-1]
        result = AgentResult(
            instruction=task.instruction,
            code=final.code,
            passed=final.passed,
            check=check,
            stop_reason=stop,
            attempts=attempts,
            sources=sources,
            retrieval=retrieval,
            tests=tests,
            total_ms=(time.perf_counter() - started) * 1000,
        )
        yield emit("done", final.number, result=result)

    def _repair_chain(self, instruction: str, number: int, temperature: float | None) -> Runnable:
        """The greedy repair chain, or one that samples (seeded by the task and attempt: reproducible)."""
        if temperature is None:
            return self._repair
        seed = (zlib.crc32(instruction.encode("utf-8")) + number) % 2**31
        return repair_chain(self._repair_model.bind(temperature=temperature, seed=seed))

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
    def _checks(task: Task) -> tuple[str | None, CheckKind]:
        if task.tests and task.tests.strip():
            return task.tests, "tests"
        found = extract_example_tests(task.instruction)
        if found:
            return found, "examples"
        return None, "runs"

    def _check(
        self, code: str, tests: str | None, entry_point: str | None
    ) -> tuple[ExecResult, TestReport | None]:
        """Run the code (against the tests when there are any).

        A sandbox failure (an exception, or a run whose server died: ``SandboxCrashed``) is retried
        once on a fresh worker; a second failure is recorded as a ``SandboxError`` attempt.
        """
        for try_number in (1, 2):
            try:
                if tests:
                    report = traced_call(
                        "sandbox.run_tests",
                        {"code": code, "tests": tests, "entry_point": entry_point},
                        lambda: self.sandbox.run_tests(
                            code, tests, entry_point=entry_point, timeout=self.timeout
                        ),
                    )
                    result: ExecResult = report.result
                    checked: tuple[ExecResult, TestReport | None] = (result, report)
                else:
                    result = traced_call(
                        "sandbox.run", {"code": code}, lambda: self.sandbox.run(code, timeout=self.timeout)
                    )
                    checked = (result, None)
                crashed = result.error is not None and result.error.name == "SandboxCrashed"
                if not crashed:
                    return checked
                problem = result.error.summary() if result.error else "sandbox crashed"
            except SandboxError as exc:
                problem = str(exc)
            if try_number == 2:
                err = ErrorInfo(name="SandboxError", value=problem, traceback="")
                return ExecResult(exit_code=None, error=err), None
        raise AssertionError("unreachable")

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> CodeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
