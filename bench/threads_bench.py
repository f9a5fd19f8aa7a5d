"""Torch threads per model: one generation at a time on 1 and on 2 threads, side by side in one run.

    flock /tmp/ragcoder-heavy.lock .venv/bin/python bench/threads_bench.py
    .venv/bin/python bench/threads_bench.py --models smollm2-135m-instruct --rounds 1   # a quick look

Each (model, engine, threads) runs in a fresh process (``RAGCODER_NUM_THREADS`` set before torch
loads), loads the model as the agent does (int8 dynamic on CPU for torch), warms up, then
generates greedy answers to a few prompts one at a time. Rounds alternate the thread order so a
change in the machine's load hits both counts. Printed per model: ms per generated token on each
count (the best round: the machine is shared), the speed ratio, and whether the answers are the
same text on both counts. This is the measurement behind the per-model thread rule
(chains/llm/cpu_threads.py, docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = [
    "Write a Python function is_prime(n).",
    "Write a Python function that merges two sorted lists.",
    "Write a Python function that counts vowels in a string.",
]
RUNS = ("smollm2-135m-instruct:torch", "qwen2.5-coder-1.5b-instruct:torch", "qwen2.5-coder-1.5b-instruct:ort")


def child(model: str, engine: str, max_new: int) -> dict:
    """One process: load, warm up, then each prompt's generation timed."""
    import torch
    from ragcoder.chains.llm.engines import load_chat

    started = time.perf_counter()
    chat = load_chat(model, engine=engine, max_new_tokens=max_new)
    load_s = time.perf_counter() - started
    chat.invoke("Say hi.", max_new_tokens=4)
    seconds, tokens, texts = 0.0, 0, []
    for prompt in PROMPTS:
        started = time.perf_counter()
        message = chat.invoke(prompt)
        seconds += time.perf_counter() - started
        tokens += message.usage_metadata["output_tokens"]
        texts.append(message.content)
    return {
        "torch_threads": torch.get_num_threads(),
        "load_s": load_s,
        "ms_per_token": seconds * 1000 / max(1, tokens),
        "tokens": tokens,
        "texts": texts,
    }


def spawn(model: str, engine: str, threads: int, max_new: int) -> dict:
    command = [sys.executable, __file__, "--child", f"{model}:{engine}", "--max-new-tokens", str(max_new)]
    env = {**os.environ, "RAGCODER_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{model} {engine} on {threads} threads failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join(RUNS), help="MODEL:ENGINE,... (engine torch or ort)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, engine = args.child.rsplit(":", 1)
        print(json.dumps(child(model, engine, args.max_new_tokens)))
        return

    runs = [tuple(r.rsplit(":", 1)) for r in args.runs.split(",") if r.strip()]
    counts = [int(t) for t in args.threads.split(",")]
    print(f"threads bench: {len(PROMPTS)} prompts x {args.max_new_tokens} new tokens, {os.cpu_count()} cores")
    results: dict[tuple[str, str, int], list[dict]] = {}
    for round_no in range(args.rounds):
        order = counts if round_no % 2 == 0 else counts[::-1]
        for model, engine in runs:
            for threads in order:
                row = spawn(model, engine, threads, args.max_new_tokens)
                results.setdefault((model, engine, threads), []).append(row)
                print(
                    f"  round {round_no + 1} {model} {engine} {threads} threads: "
                    f"{row['ms_per_token']:.1f} ms/token ({row['tokens']} tokens, load {row['load_s']:.1f} s)",
                    flush=True,
                )
    print("\nbest round per count; speed of each count against the first:")
    for model, engine in runs:
        rows = {t: results[(model, engine, t)] for t in counts}
        best = {t: min(r["ms_per_token"] for r in rows[t]) for t in counts}
        base = counts[0]
        speeds = "  ".join(f"{t} thr {best[t]:.1f} ms/tok (x{best[base] / best[t]:.2f})" for t in counts)
        texts = {t: rows[t][0]["texts"] for t in counts}
        same = sum(all(texts[t][i] == texts[base][i] for t in counts) for i in range(len(PROMPTS)))
        print(f"  {model} {engine}: {speeds}  same text on all counts: {same}/{len(PROMPTS)}")


if __name__ == "__main__":
    main()
