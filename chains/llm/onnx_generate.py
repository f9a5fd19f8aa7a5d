"""Generation on an :class:`~ragcoder.chains.llm.onnx_decoder.OnnxDecoder`: each prompt read once
(from a reused prefix when one fits), then one batched decode step per token for all rows.

- a batch: prompts are read one by one (a long prompt is compute-bound either way on a CPU), then
  every row advances together: weights are read once per step for the whole batch;
- N samples of one prompt: the prompt is read once and its keys and values copied into N rows;
- rows that finish (end-of-turn, a stop sequence, the token budget, a degenerate loop) leave the
  batch, so the rest do not carry them;
- greedy by default; temperature/top-p sampling, reproducible with a seed;
- prompt lookup for a single greedy row: up to ``lookup`` tokens copied from the prompt are checked
  in one step and the accepted ones kept (same output as plain greedy decoding);
- prefix reuse: the keys and values of recent prompts (and their answers) are kept, and a prompt
  that starts the same way reads only the tokens after the shared part.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ragcoder.chains.llm.generate import (
    GenerationOutput,
    Sampling,
    _cut_at_stop,
    _stop_prefix_len,
    degenerate,
)
from ragcoder.chains.llm.onnx_decoder import KVRows, OnnxDecoder

REPETITION_CHECK_EVERY = 8  # tokens between degenerate-loop checks of a row (as the torch path)
TOP_CANDIDATES = 2048  # nucleus sampling looks here first; the whole vocabulary only if needed
MAX_NGRAM = 3  # prompt lookup matches the last 3, 2 or 1 tokens


@dataclass
class _Row:
    """One sequence being generated."""

    prompt: list[int]
    cached: int = 0
    new: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False
    reason: str = "length"
    pending: int | None = None  # picked, not yet fed to the model

    def output(self) -> GenerationOutput:
        return GenerationOutput(self.text, len(self.prompt), len(self.new), self.reason, self.cached)


@dataclass
class _Entry:
    ids: list[int]
    kv: KVRows


@dataclass
class OnnxPrefixCache:
    """The keys and values of the last ``max_entries`` sequences, for prompts that start the same."""

    max_entries: int = 16
    max_bytes: int = 512 << 20  # Qwen 1.5B keeps 57 KB per token: about 9,000 tokens in all
    # reading a token costs about 12 ms here, copying its keys and values about 10 us: even the
    # chat template's first tokens are worth taking
    min_tokens: int = 8
    entries: list[_Entry] = field(default_factory=list)

    def best(self, ids: list[int]) -> tuple[_Entry | None, int]:
        """The entry sharing the longest prefix with ``ids`` (at least the last token is left to
        compute, since its logits pick the first new token) and that length."""
        best, best_len = None, 0
        for entry in self.entries:
            shared = _common_prefix(entry.ids, ids)
            if shared > best_len:
                best, best_len = entry, shared
        best_len = min(best_len, len(ids) - 1)
        return (best, best_len) if best is not None and best_len >= self.min_tokens else (None, 0)

    def put(self, ids: list[int], kv: KVRows) -> None:
        """Keep ``kv`` (the keys and values of ``ids``); an entry it extends (the prompt, now with
        its answer) or repeats is replaced, and the oldest goes when the cache is full."""
        if len(ids) < self.min_tokens:
            return
        self.entries = [e for e in self.entries if e.ids != ids[: len(e.ids)]]
        self.entries.append(_Entry(ids, kv))
        del self.entries[: -self.max_entries]
        while len(self.entries) > 1 and sum(e.kv.nbytes() for e in self.entries) > self.max_bytes:
            del self.entries[0]

    def holds(self, ids: list[int]) -> bool:
        """Is ``ids`` (or a sequence starting with it) stored already?"""
        return any(e.ids[: len(ids)] == ids for e in self.entries)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class OnnxGenerator:
    """Generates with one decoder and tokenizer; one generation at a time (``lock``)."""

    def __init__(self, decoder: OnnxDecoder, tokenizer: Any, *, reuse_prefix: bool = True) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.prefix_cache = OnnxPrefixCache() if reuse_prefix else None
        self.lock = threading.Lock()
        self.stop_ids = set(decoder.eos_token_ids)
        if tokenizer.eos_token_id is not None:
            self.stop_ids.add(int(tokenizer.eos_token_id))

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def generate(
        self,
        prompts: Sequence[str],
        *,
        stop: Sequence[str] = (),
        max_new_tokens: int = 512,
        sampling: Sampling | None = None,
        samples: int = 1,
        lookup: int | None = None,
    ) -> list[GenerationOutput]:
        """Completions of ready-made prompts: ``samples`` per prompt, prompt by prompt in order."""
        final: list[_Row] = []
        for final in self._run(prompts, stop, max_new_tokens, sampling, samples, lookup):  # noqa: B007
            pass  # each step yields the rows; the last yield holds the finished ones
        return [row.output() for row in final]

    def stream(
        self,
        prompt: str,
        *,
        stop: Sequence[str] = (),
        max_new_tokens: int = 512,
        sampling: Sampling | None = None,
        lookup: int | None = None,
    ) -> Iterator[str | GenerationOutput]:
        """Text pieces as they are generated, then one :class:`GenerationOutput` (empty text).
        Text that may be the start of a stop sequence, or half a character, is held back."""
        shown = 0
        row = None
        for rows in self._run([prompt], stop, max_new_tokens, sampling, 1, lookup):
            row = rows[0]
            safe = len(row.text) if row.done else len(row.text) - _stop_prefix_len(row.text, stop)
            while safe > shown and row.text[safe - 1] == "\ufffd" and not row.done:
                safe -= 1  # a character whose bytes are still coming
            if safe > shown:
                yield row.text[shown:safe]
                shown = safe
        if row is not None:
            yield GenerationOutput("", len(row.prompt), len(row.new), row.reason, row.cached)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(
        self,
        prompts: Sequence[str],
        stop: Sequence[str],
        max_new_tokens: int,
        sampling: Sampling | None,
        samples: int,
        lookup: int | None,
    ) -> Iterator[list[_Row]]:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, not {samples}")
        encoded = [self.encode(p) for p in prompts]
        if not encoded:
            return
        for ids in encoded:
            if not ids:
                raise ValueError("an empty prompt: there is nothing to continue")
        lookup = lookup if lookup and sampling is None and len(encoded) * samples == 1 else None
        longest, context = max(len(ids) for ids in encoded), self.decoder.context_length
        if longest >= context:
            raise ValueError(f"a prompt of {longest} tokens does not fit the model's context of {context}")
        max_new_tokens = min(max_new_tokens, context - longest - (lookup or 0) - 1)  # answers end there
        capacity = longest + max_new_tokens + (lookup or 0) + 1
        with self.lock:
            rows = [_Row(ids) for ids in encoded for _ in range(samples)]
            # row i draws from its own generator seeded seed + i (generate.Sampling's rule): a row's
            # draws do not depend on which rows share its batch, so sample j of n is what a single
            # call with seed + j gives, here and on the torch engine
            seed = sampling.seed if sampling else None
            rngs = [np.random.default_rng(None if seed is None else seed + i) for i in range(len(rows))]
            kv = self.decoder.new_rows(len(rows), capacity)
            for index, ids in enumerate(encoded):
                first = index * samples
                logits = self._prefill(kv, first, ids, rows[first])
                for sample in range(1, samples):  # the same prompt: copy its keys and values
                    _copy_row(kv, first, first + sample)
                    rows[first + sample].cached = rows[first].cached
                for sample in range(samples):
                    token = int(_pick(logits[None, :], sampling, [rngs[first + sample]])[0])
                    self._accept(rows[first + sample], token, stop, max_new_tokens, kv, first + sample)
            yield rows
            active = [i for i, row in enumerate(rows) if not row.done]
            kv = kv.take(active) if len(active) < len(rows) else kv
            while active:
                if lookup:
                    self._lookup_step(kv, rows[active[0]], lookup, stop, max_new_tokens)
                else:
                    ids = np.array([[rows[i].pending] for i in active], dtype=np.int64)
                    logits = self.decoder.step(kv, ids)[:, -1]
                    for slot, token in enumerate(_pick(logits, sampling, [rngs[i] for i in active])):
                        self._accept(rows[active[slot]], int(token), stop, max_new_tokens, kv, slot)
                yield rows
                still = [slot for slot, i in enumerate(active) if not rows[i].done]
                if len(still) < len(active):
                    kv = kv.take(still) if still else kv
                    active = [active[slot] for slot in still]

    def _prefill(self, kv: KVRows, row: int, ids: list[int], state: _Row) -> np.ndarray:
        reused = 0
        if self.prefix_cache is not None:
            entry, reused = self.prefix_cache.best(ids)
            if entry is not None:
                for target, source in zip(kv.keys + kv.values, entry.kv.keys + entry.kv.values, strict=True):
                    target[row, :, :reused] = source[0, :, :reused]
                kv.lengths[row] = reused
        state.cached = reused
        logits = self.decoder.prefill(kv, row, ids[reused:])
        if self.prefix_cache is not None and not self.prefix_cache.holds(ids):
            # kept now, not only when the row finishes: the next prompts of the same batch share
            # the chat template and the task scaffolding
            self.prefix_cache.put(list(ids), kv.row_prefix(row, len(ids)))
        return logits

    def _accept(
        self, row: _Row, token: int, stop: Sequence[str], max_new: int, kv: KVRows, slot: int
    ) -> None:
        """Add a picked token to ``row`` and decide whether the row is finished."""
        row.new.append(token)
        row.pending = token
        if token in self.stop_ids:
            row.done, row.reason = True, "stop"
        else:
            text = self.tokenizer.decode(row.new, skip_special_tokens=True)
            row.text, hit = _cut_at_stop(text, stop)
            if hit:
                row.done, row.reason = True, "stop"
            elif len(row.new) % REPETITION_CHECK_EVERY == 0 and degenerate(text):
                row.done, row.reason = True, "repetition"
            elif len(row.new) >= max_new:
                row.done, row.reason = True, "length"
        if row.done:
            self._keep(row, kv, slot)

    def _keep(self, row: _Row, kv: KVRows, slot: int) -> None:
        """Store a finished row's keys and values for prompts that start the same way."""
        if self.prefix_cache is None:
            return
        length = int(kv.lengths[slot])
        ids = (row.prompt + row.new)[:length]
        if not self.prefix_cache.holds(ids):  # (a sample of the same prompt may have put it there)
            self.prefix_cache.put(ids, kv.row_prefix(slot, length))

    def _lookup_step(self, kv: KVRows, row: _Row, lookup: int, stop: Sequence[str], max_new: int) -> None:
        """One prompt-lookup step for the only row: feed the pending token and up to ``lookup``
        tokens that followed the same n-gram earlier; keep the ones greedy decoding agrees with."""
        history = row.prompt + row.new
        room = min(lookup, max_new - len(row.new) - 1, kv.capacity - int(kv.lengths[0]) - 1)
        candidates = _lookup_candidates(history, max(room, 0))
        before = int(kv.lengths[0])
        ids = np.array([[row.pending, *candidates]], dtype=np.int64)
        predicted = self.decoder.step(kv, ids)[0].argmax(axis=-1)
        accepted = 0
        while accepted < len(candidates) and candidates[accepted] == int(predicted[accepted]):
            accepted += 1
        kv.lengths[0] = before + 1 + accepted  # the rejected tail is overwritten by the next step
        for token in [*candidates[:accepted], int(predicted[accepted])]:
            self._accept(row, token, stop, max_new, kv, 0)
            if row.done:
                return


def _lookup_candidates(history: list[int], limit: int) -> list[int]:
    """Up to ``limit`` tokens that followed the most recent earlier occurrence of the last n-gram."""
    if limit <= 0:
        return []
    for size in range(MAX_NGRAM, 0, -1):
        if len(history) <= size:
            continue
        tail = history[-size:]
        for start in range(len(history) - size - 1, -1, -1):
            if history[start : start + size] == tail:
                follow = history[start + size : start + size + limit]
                if follow:
                    return follow
    return []


def _copy_row(kv: KVRows, source: int, target: int) -> None:
    length = int(kv.lengths[source])
    for arrays in (kv.keys, kv.values):
        for layer in arrays:
            layer[target, :, :length] = layer[source, :, :length]
    kv.lengths[target] = length


def _pick(logits: np.ndarray, sampling: Sampling | None, rngs: list[np.random.Generator]) -> np.ndarray:
    """The next token of each row of ``logits`` [B, V]: greedy, or sampled as the torch engine does:
    temperature, then the ``top_k`` most likely (0: all), then the top-p nucleus of those."""
    if sampling is None:
        return logits.argmax(axis=-1)
    picks = np.empty(len(logits), dtype=np.int64)
    for row, scores in enumerate(logits.astype(np.float64) / sampling.temperature):
        vocab = len(scores)
        top = min(sampling.top_k or TOP_CANDIDATES, vocab)
        candidates = np.argpartition(scores, -top)[-top:]
        probs = np.exp(scores - scores.max())
        order = candidates[np.argsort(-scores[candidates])]
        # top-k renormalizes before the nucleus is taken (transformers' warpers, in that order)
        total = probs[order].sum() if sampling.top_k else probs.sum()
        mass = np.cumsum(probs[order]) / total
        if not sampling.top_k and mass[-1] < sampling.top_p and top < vocab:  # a wider nucleus: use all
            order = np.argsort(-scores)
            mass = np.cumsum(probs[order]) / total
        keep = order[: int(np.searchsorted(mass, sampling.top_p)) + 1]
        weights = probs[keep] / probs[keep].sum()
        picks[row] = keep[rngs[row].choice(len(keep), p=weights)]
    return picks
