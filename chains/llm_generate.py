"""Generation on a HF causal LM: ``model.generate`` with stop sequences, token counts, batching
and streaming. Used by :mod:`chains.llm`'s LangChain classes; heavy imports stay inside."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class GenerationOutput:
    """One completion: the new text (cut before any stop sequence) and its token counts."""

    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    """``"stop"`` (end-of-turn token or a stop sequence) or ``"length"`` (max_new_tokens reached)."""

    def info(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "finish_reason": self.finish_reason,
        }


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    hits = [i for s in stop if s and (i := text.find(s)) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def _stop_prefix_len(text: str, stop: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that could be the start of a stop sequence."""
    return max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def _generate_kwargs(tokenizer: Any, stop: Sequence[str], max_new_tokens: int, lookup: int | None) -> dict:
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
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
) -> list[GenerationOutput]:
    """One left-padded greedy ``model.generate`` over ``prompts`` (already chat-formatted)."""
    import torch

    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        output = model.generate(
            **encoded, **_generate_kwargs(tokenizer, stop, max_new_tokens, prompt_lookup_num_tokens)
        )
    prompt_len = encoded["input_ids"].shape[1]
    results = []
    for row in range(len(prompts)):
        new_ids = output[row, prompt_len:].tolist()
        count, ended = _count_new_tokens(model, tokenizer, new_ids)
        text, hit_stop = _cut_at_stop(tokenizer.decode(new_ids[:count], skip_special_tokens=True), stop)
        input_tokens = int(encoded["attention_mask"][row].sum())
        results.append(GenerationOutput(text, input_tokens, count, "stop" if ended or hit_stop else "length"))
    return results


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    stop: Sequence[str],
    max_new_tokens: int,
    prompt_lookup_num_tokens: int | None = None,
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

    def run() -> None:
        try:
            with torch.inference_mode():
                outcome["output"] = model.generate(
                    **encoded,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    **_generate_kwargs(tokenizer, stop, max_new_tokens, prompt_lookup_num_tokens),
                )
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
        yield GenerationOutput("", input_tokens, count, "stop" if ended or hit_stop else "length")
    finally:
        cancelled.set()
        thread.join()
