"""llama.cpp on the installed GGUF, for ``bench/engine_bench.py --llamacpp-python PY``.

Runs under *another* interpreter, one with ``llama-cpp-cffi`` installed (the only llama.cpp build
with a wheel on PyPI; it pins transformers < 5, so it cannot share ragcoder's environment):

    python3 -m venv /tmp/llamacpp && /tmp/llamacpp/bin/pip install llama-cpp-cffi
    python bench/engine_bench.py --engines torch-int8,ort-int4 --llamacpp-python /tmp/llamacpp/bin/python

It reads the installed GGUF as it is (Qwen's Q4_K_M blocks: no conversion) and prints one JSON line with the keys the
other engines' workers print: load, prefill and greedy decode tokens/s on one prompt, then N prompts
as N sequences of one batch (each stops at its own end) against the same N one at a time.
Standalone on purpose: nothing from ragcoder is importable there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import Any

os.environ.setdefault("LLAMA_CPP_BACKEND", "cpu")  # the wheel also ships CUDA and Vulkan builds

import numpy as np
from llama.llama_cpp import ffi, lib  # llama-cpp-cffi: the C API through cffi

CONTEXT = 4096  # prompts of ~60 tokens and 8 x 128 new ones fit with room to spare


class LlamaCpp:
    def __init__(self, gguf: str, threads: int, sequences: int) -> None:
        lib.llama_backend_init()
        lib.llama_log_set(lib.llama_cpp_cffi_ggml_log_callback, ffi.NULL)  # quiet
        self.model = lib.llama_model_load_from_file(gguf.encode(), lib.llama_model_default_params())
        if self.model == ffi.NULL:
            raise SystemExit(f"llama.cpp could not load {gguf}")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_seq_max = CONTEXT, 512, sequences
        params.n_threads = params.n_threads_batch = threads
        self.ctx = lib.llama_new_context_with_model(self.model, params)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.batch = lib.llama_batch_init(512, 0, sequences)

    def chat_tokens(self, text: str) -> list[int]:
        """``text`` as one user turn in the GGUF's own chat template (the other engines use the
        same template from the HF folder), tokenized by llama.cpp."""
        role, content = ffi.new("char[]", b"user"), ffi.new("char[]", text.encode())
        message = ffi.new("llama_chat_message[1]")
        message[0].role, message[0].content = role, content
        template = lib.llama_model_chat_template(self.model, ffi.NULL)
        out = ffi.new("char[]", 16384)
        size = lib.llama_chat_apply_template(template, message, 1, True, out, 16384)
        prompt = ffi.buffer(out, size)[:]
        ids = ffi.new("llama_token[]", CONTEXT)
        n = lib.llama_tokenize(self.vocab, prompt, len(prompt), ids, CONTEXT, False, True)
        return [ids[i] for i in range(n)]

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = seq
        b.n_tokens = i + 1
        return i

    def _greedy(self, index: int) -> int:
        logits = lib.llama_get_logits_ith(self.ctx, index)
        return int(np.frombuffer(ffi.buffer(logits, self.n_vocab * 4), dtype=np.float32).argmax())

    def generate(self, prompts: list[list[int]], new_tokens: int) -> tuple[list[list[int]], list[float]]:
        """Greedy continuations of ``prompts`` as sequences of one batch; returns the tokens and the
        time each step's tokens came out (the first entry: after the prompts were read)."""
        lib.llama_kv_cache_clear(self.ctx)
        self.batch.n_tokens = 0
        last = {}
        for seq, ids in enumerate(prompts):
            for pos, token in enumerate(ids):
                index = self._add(token, pos, seq, pos == len(ids) - 1)
            last[seq] = index
        self._decode()
        outs: list[list[int]] = [[] for _ in prompts]
        positions = [len(p) for p in prompts]
        times = []
        while last:
            self.batch.n_tokens, step = 0, {}
            for seq, index in last.items():
                token = self._greedy(index)
                if lib.llama_vocab_is_eog(self.vocab, token) or len(outs[seq]) >= new_tokens:
                    continue
                outs[seq].append(token)
                step[seq] = self._add(token, positions[seq], seq, True)
                positions[seq] += 1
            times.append(time.perf_counter())
            last = step
            if step:
                self._decode()
        return outs, times

    def _decode(self) -> None:
        if lib.llama_decode(self.ctx, self.batch) != 0:
            raise SystemExit("llama_decode failed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--prompt", required=True, help="The decode prompt (one user turn).")
    parser.add_argument("--batch-prompt", action="append", default=[], help="One per batch row.")
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    started = time.perf_counter()
    engine = LlamaCpp(args.gguf, threads, max(1, len(args.batch_prompt)))
    engine.generate([engine.chat_tokens("Say OK.")], 1)  # first-run set-up, as the others do
    load_s = time.perf_counter() - started
    prompt = engine.chat_tokens(args.prompt)
    t0 = time.perf_counter()
    (out,), times = engine.generate([prompt], args.new_tokens)
    result: dict[str, Any] = {
        "engine": "llamacpp-gguf",
        "load_s": load_s,
        "disk_gb": os.path.getsize(args.gguf) / 1e9,
        "prompt_tokens": len(prompt),
        "new_tokens": len(out),
        "first_token_s": times[0] - t0,
        "prefill_tok_s": len(prompt) / (times[0] - t0),
        "decode_tok_s": (len(out) - 1) / (times[len(out) - 1] - times[0]),
    }
    if args.batch_prompt:
        prompts = [engine.chat_tokens(p) for p in args.batch_prompt]
        t0 = time.perf_counter()
        together, _ = engine.generate(prompts, args.new_tokens)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        apart = [engine.generate([p], args.new_tokens)[0][0] for p in prompts]
        single_s = time.perf_counter() - t0
        result["batch_tok_s"] = sum(map(len, together)) / batch_s
        result["single_tok_s"] = sum(map(len, apart)) / single_s
        result["batch_same_text"] = sum(a == b for a, b in zip(together, apart, strict=True))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(result))


if __name__ == "__main__":
    main()
