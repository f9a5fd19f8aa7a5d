"""Making candidates: sampled replies seeded by task and round (a rerun repeats them), repairs of
the failing candidates closest to passing, and repeats recognised so no code runs twice."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable
from ragcoder.agent.feedback import feedback_for_candidate
from ragcoder.agent.prelude import add_missing_prelude
from ragcoder.agent.result import Attempt, Origin, TestCase
from ragcoder.chains.prompting.codegen import Draft, draft_from_reply, repair_chain

MAX_BATCH_ROWS = 8  # rows per sampled call: the local model's batch size (more rows, another seed)
TESTS_ROUND = 0  # the seed's round for the call asking for tests before any candidate is sampled


class _TokenForwarder(BaseCallbackHandler):
    """Hands each streamed token to a plain callback."""

    def __init__(self, on_token: Callable[[str], None]) -> None:
        self.on_token = on_token

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.on_token(token)


def elapsed_ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


def normalise(code: str) -> str:
    """Code as compared for repeats: trailing spaces and blank ends ignored."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def seed_for(instruction: str, round_number: int, row: int) -> int:
    """The sampling seed of one call: the same task, round and row always sample alike."""
    return (zlib.crc32(instruction.encode("utf-8")) + 1000 * round_number + row) % 2**31


def sample_replies(
    sampler: Runnable, rows: list[list[Any]], instruction: str, temperature: float, number: int = 1
) -> tuple[list[Draft], list[int]]:
    """Sampled replies to ``rows`` (chat messages), at most MAX_BATCH_ROWS per seeded call."""
    drafts: list[Draft] = []
    seeds: list[int] = []
    for start in range(0, len(rows), MAX_BATCH_ROWS):
        seed = seed_for(instruction, number, start)
        chunk = rows[start : start + MAX_BATCH_ROWS]
        replies = sampler.bind(temperature=temperature, seed=seed).batch(chunk)
        drafts += [draft_from_reply(r) for r in replies]
        seeds += [seed + row for row in range(len(chunk))]  # row i samples with seed + i
    return drafts, seeds


def draft_from(chain: Runnable, inputs: dict[str, Any], on_token: Callable[[str], None] | None) -> Draft:
    """One reply of ``chain``, streamed to ``on_token`` when given."""
    if on_token is None:
        return chain.invoke(inputs)
    draft: Draft | None = None
    for chunk in chain.stream(inputs, config={"callbacks": [_TokenForwarder(on_token)]}):
        draft = chunk
    assert draft is not None
    return draft


def new_candidate(
    draft: Draft,
    origin: Origin,
    seed: int | None,
    gen_ms: float,
    number: int,
    index: int,
    instruction: str,
    temperature: float | None,
) -> Attempt:
    """A candidate not yet run: ``temperature`` is what it was sampled at (None: greedy)."""
    from ragcoder.sandbox import ExecResult

    return Attempt(
        number=number,
        kind="repair" if origin == "repair" else "generate",
        code=add_missing_prelude(draft["code"], instruction),
        result=ExecResult(exit_code=None),
        passed=False,
        generate_ms=gen_ms,
        input_tokens=draft["input_tokens"],
        output_tokens=draft["output_tokens"],
        cached_tokens=draft.get("cached_tokens", 0),
        temperature=temperature,
        candidate=index,
        origin=origin,
        seed=seed,
    )


def copy_run(candidate: Attempt, original: Attempt) -> None:
    """Give ``candidate`` the run of ``original``, which has the same code."""
    candidate.duplicate_of = original.candidate
    candidate.result, candidate.report, candidate.passed = (
        original.result,
        original.report,
        original.passed,
    )
    candidate.statuses, candidate.outputs = original.statuses, original.outputs


def set_repair_feedback(runs: list[Attempt], tests: list[TestCase]) -> None:
    """Fill in what a repair of each run is told (once: a run keeps its feedback)."""
    hard_names = {t.name for t in tests if t.name and t.origin != "generated"}
    for run in runs:
        if not run.feedback:
            run.feedback = feedback_for_candidate(run, hard_names)
            if run.result.missing:  # no repair can install a package: the user is told what to do
                run.feedback = f"{run.result.missing}\n{run.feedback}"


def repair_drafts(
    repair_model: Runnable,
    runs: list[Attempt],
    weights: dict[int, int],
    tests: list[TestCase],
    inputs: dict[str, Any],
    *,
    count: int,
    temperature: float,
    number: int,
    on_token: Callable[[str], None] | None,
) -> Iterator[tuple[Draft, Origin, int, float]]:
    """``count`` sampled repairs, of the failing candidates closest to passing (in turn)."""
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

    targets = sorted(runs, key=closeness)[:count]
    for row in range(count):
        target = targets[row % len(targets)]
        seed = seed_for(inputs["instruction"], number, row)
        bound = repair_model.bind(temperature=temperature, seed=seed)
        t0 = time.perf_counter()
        draft = draft_from(
            repair_chain(bound),
            {**inputs, "code": target.code, "feedback": target.feedback},
            on_token if row == 0 else None,
        )
        yield draft, "repair", seed, elapsed_ms(t0)
