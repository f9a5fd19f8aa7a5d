"""Generation on a HF causal LM: ``model.generate`` with stop sequences, token counts, batching
and streaming. Used by :mod:`ragcoder.chains.llm.chat_model`'s LangChain classes; heavy imports stay inside."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ragcoder.chains.llm.prefix_cache import (
    PrefixCache,
    assisted_from_prefix,
    cache_argument,
    plain_cache,
    row_cache,
)


@dataclass
class GenerationOutput:
    """One completion: the new text (cut before any stop sequence) and its token counts."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    """``"stop"`` (end-of-turn token or a stop sequence), ``"length"`` (max_new_tokens reached) or
    ``"repetition"`` (stopped in a degenerate loop, see :func:`degenerate`)."""
    cached_tokens: int = 0
    """Prompt tokens whose keys and values came from an earlier prompt (:mod:`ragcoder.chains.llm.prefix_cache`)."""

    def info(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
            "cached_tokens": self.cached_tokens,
        }


_LITERAL = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|\d+")


def degenerate(text: str, lines: int = 32, shapes: int = 3, period: int = 50, repeats: int = 4) -> bool:
    """Has greedy decoding fallen into a loop? Small models do, and then run to ``max_new_tokens``
    (a quarter of a batch's time can go to one such row). Two signs:

    - the last ``lines`` lines have at most ``shapes`` distinct shapes (numbers and string literals
      masked): ``if base == 109: return ...`` / ``if base == 113: ...``, or the same print again;
    - the text ends in a piece of at most ``period`` characters repeated ``repeats`` times (and
      over at least 80 characters).
    """
    for size in range(1, period + 1):
        tail = text[-size:]
        times = max(repeats, -(-80 // size))  # and at least 80 characters: "0000" or "----" is fine
        if len(text) >= size * times and tail.strip() and text.endswith(tail * times):
            return True
    recent = [line.strip() for line in text.splitlines()[:-1] if line.strip()][-lines:]
    if len(recent) < lines:
        return False
    return len({_LITERAL.sub("#", line) for line in recent}) <= shapes


def _repetition_stop(tokenizer: Any, prompt_len: int, every: int = 8) -> Any:
    """A stopping criterion that ends each row whose new text is :func:`degenerate` (checked every
    ``every`` tokens); the rows it stopped are in ``.stopped``."""
    import torch
    from transformers import StoppingCriteria

    class RepetitionStop(StoppingCriteria):
        def __init__(self) -> None:
            self.stopped: set[int] = set()
            self.calls = 0

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.calls += 1
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            if self.calls % every:
                return done
            for row in range(input_ids.shape[0]):
                if row in self.stopped:
                    done[row] = True
                elif degenerate(tokenizer.decode(input_ids[row, prompt_len:], skip_special_tokens=True)):
                    self.stopped.add(row)
                    done[row] = True
            return done

    return RepetitionStop()


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def _stop_prefix_len(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could be the start of a stop sequence."""
    return max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


@dataclass(frozen=True)
class Sampling:
    """Sample instead of greedy decoding (e.g. for a repair that is stuck repeating itself).

    Row ``i`` of a call draws from its own generator seeded ``seed + i``, so a row's tokens do not
    depend on which rows share its batch: ``batch([a, b], seed=s)`` samples ``a`` as
    ``invoke(a, seed=s)`` and ``b`` as ``invoke(b, seed=s + 1)`` do, in-process, through a served
    model's separate requests, or in any micro-batch (the seeded-row rule every engine follows).
    """

    temperature: float
    top_p: float = 0.95  # the Codex paper's nucleus
    seed: int | None = None  # the first row's generator seed; None: torch's global generator
    top_k: int = 50  # transformers' default when sampling, what the dev split was tuned with

    def from_row(self, row: int) -> Sampling:
        """The sampling of a call's rows from ``row`` on (a batch split into several calls)."""
        return self if self.seed is None or not row else dataclasses.replace(self, seed=self.seed + row)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0 to sample, not {self.temperature}; omit it to decode greedily"
            )


def sampling_from(kwargs: dict[str, Any]) -> Sampling | None:
    """``temperature`` (None or 0: greedy), ``top_p`` and ``seed`` call options as a :class:`Sampling`."""
    temperature = kwargs.get("temperature")
    if not temperature:
        return None
    seed = kwargs.get("seed")
    return Sampling(
        float(temperature), float(kwargs.get("top_p") or Sampling.top_p), None if seed is None else int(seed)
    )


def _row_sampler(sampling: Sampling, rows: int) -> Any:
    """Logits processors that turn greedy decoding into seeded sampling, one generator per row.

    Temperature, top-k and top-p as transformers applies them, then Gumbel noise (minus the log
    of Exp(1) draws): the argmax of the noised scores is a sample of the filtered softmax
    (the Gumbel-max trick), and each row's draws come from its own generator.
    """
    import torch
    from transformers import (
        LogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    class RowNoise(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = (
                None
                if sampling.seed is None
                else [torch.Generator().manual_seed(sampling.seed + row) for row in range(rows)]
            )

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            noise = torch.empty(scores.shape, dtype=torch.float32)
            for row in range(scores.shape[0]):  # prompt lookup scores one row per position
                generator = None if self.generators is None else self.generators[row % rows]
                noise[row].exponential_(generator=generator)
            return scores.float() - noise.log().to(scores.device)

    processors = [TemperatureLogitsWarper(sampling.temperature)]
    if sampling.top_k:
        processors.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=sampling.top_p))
    return [*processors, RowNoise()]


def _generate_kwargs(
    tokenizer: Any,
    stop: Sequence[str],
    max_new_tokens: int,
    lookup: int | None,
    sampling: Sampling | None = None,
    rows: int = 1,
) -> dict:
    from transformers import LogitsProcessorList

    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if sampling is not None:  # greedy over seeded noise: see _row_sampler
        kwargs["logits_processor"] = LogitsProcessorList(_row_sampler(sampling, rows))
    if stop:
        kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
    if lookup:
        kwargs["prompt_lookup_num_tokens"] = lookup
    return kwargs


def _count_new_tokens(model: Any, tokenizer: Any, new_ids: list[int]) -> tuple[int, bool]:
    """Generated tokens up to the end-of-turn token (included) or the padding; and whether it ended."""
    eos = model.generation_config.eos_token_id
    ends = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    for i, token in enumerate(new_ids):
        if token in ends:
            return i + 1, True
        if token == tokenizer.pad_token_id:
            return i, False
    return len(new_ids), False


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    stop: Sequence[str],
    max_new_tokens: int,
    prompt_lookup_num_tokens: int | None = None,
    sampling: Sampling | None = None,
    prefix_cache: PrefixCache | None = None,
) -> list[GenerationOutput]:
    """One left-padded ``model.generate`` over ``prompts`` (already chat-formatted); greedy unless
    ``sampling``. With a ``prefix_cache``, one prompt starts from the longest stored prefix it
    shares, and every prompt's keys and values are stored for the prompts after it."""
    import torch
    from transformers import StoppingCriteriaList

    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    prompt_len = encoded["input_ids"].shape[1]
    looping = _repetition_stop(tokenizer, prompt_len)
    reuse, reused = _reuse_kwargs(prefix_cache, encoded["input_ids"])
    with torch.inference_mode(), _assisted_fix(model, reuse, prompt_lookup_num_tokens):
        generated = model.generate(
            **encoded,
            stopping_criteria=StoppingCriteriaList([looping]),
            **_generate_kwargs(
                tokenizer, stop, max_new_tokens, prompt_lookup_num_tokens, sampling, len(prompts)
            ),
            **reuse,
        )
    output = _keep_prefixes(prefix_cache, generated, encoded)
    results = []
    for row in range(len(prompts)):
        new_ids = output[row, prompt_len:].tolist()
        count, ended = _count_new_tokens(model, tokenizer, new_ids)
        text, hit_stop = _cut_at_stop(tokenizer.decode(new_ids[:count], skip_special_tokens=True), stop)
        input_tokens = int(encoded["attention_mask"][row].sum())
        reason = "stop" if ended or hit_stop else "repetition" if row in looping.stopped else "length"
        results.append(GenerationOutput(text, input_tokens, count, reason, reused))
    return results


def _reuse_kwargs(prefix_cache: PrefixCache | None, input_ids: Any) -> tuple[dict[str, Any], int]:
    """``generate`` arguments that start one prompt from its stored prefix, and that prefix's length."""
    if prefix_cache is None:
        return {}, 0
    kwargs: dict[str, Any] = {"return_dict_in_generate": True}
    if input_ids.shape[0] == 1:
        cache, reused = prefix_cache.take(input_ids[0].tolist())
        if cache is not None:
            kwargs[cache_argument()] = cache
            return kwargs, reused
    return kwargs, 0


def _assisted_fix(model: Any, reuse: dict[str, Any], lookup: int | None) -> Any:
    cache = reuse.get(cache_argument())
    return assisted_from_prefix(model, cache) if lookup and cache is not None else contextlib.nullcontext()


def _keep_prefixes(prefix_cache: PrefixCache | None, generated: Any, encoded: Any) -> Any:
    """Store the keys and values ``generate`` computed, and return its token ids.

    One prompt: its cache as it is (prompt and answer). A left-padded batch: each row's prompt
    without its padding (left-padded rows are positioned from their first real token, so that part
    is what the row alone would have computed).
    """
    if prefix_cache is None:
        return generated
    cache = getattr(generated, cache_argument(), None)
    sequences = generated.sequences
    if cache is None or not plain_cache(cache):
        return sequences
    if sequences.shape[0] == 1:
        prefix_cache.put(sequences[0, : cache.get_seq_length()].tolist(), cache)
        return sequences
    prompt_len = encoded["input_ids"].shape[1]
    for row in range(sequences.shape[0]):
        start = prompt_len - int(encoded["attention_mask"][row].sum())
        ids = encoded["input_ids"][row, start:].tolist()
        if len(ids) >= prefix_cache.min_tokens:
            prefix_cache.put(ids, row_cache(cache, row, start, prompt_len))
    return sequences


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    stop: Sequence[str],
    max_new_tokens: int,
    prompt_lookup_num_tokens: int | None = None,
    sampling: Sampling | None = None,
    prefix_cache: PrefixCache | None = None,
) -> Iterator[str | GenerationOutput]:
    """Yield text pieces as they are generated, then one :class:`GenerationOutput` (empty text).

    Generation runs in a thread feeding a ``TextIteratorStreamer``; text that might be the start
    of a stop sequence is held back until it is clear. Closing the iterator early stops generation.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    encoded = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    cancelled = threading.Event()

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device
            )

    outcome: dict[str, Any] = {}
    looping = _repetition_stop(tokenizer, encoded["input_ids"].shape[1])
    reuse, reused = _reuse_kwargs(prefix_cache, encoded["input_ids"])

    def run() -> None:
        try:
            with torch.inference_mode(), _assisted_fix(model, reuse, prompt_lookup_num_tokens):
                generated = model.generate(
                    **encoded,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancelled(), looping]),
                    **_generate_kwargs(tokenizer, stop, max_new_tokens, prompt_lookup_num_tokens, sampling),
                    **reuse,
                )
            outcome["output"] = _keep_prefixes(prefix_cache, generated, encoded)
        except BaseException as error:  # handed to the consumer below
            outcome["error"] = error
            streamer.end()

    thread = threading.Thread(target=run, name="ragcoder-generate", daemon=True)
    thread.start()
    try:
        held, hit_stop = "", False
        for piece in streamer:
            if hit_stop:
                continue  # drain until generation notices the cancel
            held += piece
            text, hit_stop = _cut_at_stop(held, stop)
            if hit_stop:
                cancelled.set()
                held = ""
            else:
                keep = _stop_prefix_len(held, stop)
                text, held = held[: len(held) - keep], held[len(held) - keep :]
            if text:
                yield text
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        if held:
            yield held
        new_ids = outcome["output"][0, encoded["input_ids"].shape[1] :].tolist()
        count, ended = _count_new_tokens(model, tokenizer, new_ids)
        input_tokens = int(encoded["input_ids"].shape[1])
        reason = "stop" if ended or hit_stop else "repetition" if looping.stopped else "length"
        yield GenerationOutput("", input_tokens, count, reason, reused)
    finally:
        cancelled.set()
        thread.join()
