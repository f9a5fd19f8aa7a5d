"""Local LLM throughput, measured side by side in one run.

1. chat model (``LocalChatModel.invoke``) vs bare ``model.generate``, same prompt and settings:
   the wrapper's overhead (target <= 5%);
2. 8 prompts through ``.batch()`` (one left-padded generate) vs one by one (target >= 2x);
3. real repair prompts (``bench/data/repair_cases.jsonl``: the first failed attempt and its feedback
   of 8 dev-split tasks from the greedy loop, docs/results.md) with vs without prompt-lookup decoding,
   one at a time (target >= 2.5x); how many answers are identical, and the tokens gained per pass;
3b. the same repair prompts as one left-padded batch, against prompt lookup one at a time: which
   serves several concurrent repairs faster (lookup did, 1.35x, so a batch with lookup runs its
   prompts one at a time).
3c. the same repairs as the agent loop runs them: after their task's first-attempt prompt, whose keys
   and values the repair reuses for the prefix they share (chains/llm/prefix_cache.py); with vs
   without prompt lookup (the target again), and each against part 3's cold repair.
Parts 1 to 3b turn prefix reuse off, so every prompt is read in full.

    python bench/llm_bench.py                      # Qwen 1.5B int8 (installed), a few minutes
    python bench/llm_bench.py --model smollm2-135m-instruct --quantize none
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads crawl on a shared CPU

QUESTIONS = [
    "Write a Python function is_prime(n).",
    "Write a Python function that reverses the words of a sentence.",
    "Write fizzbuzz in Python.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that flattens a nested list.",
    "Write a Python function that counts vowels in a string.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that merges two sorted lists.",
]

REPAIR_CASES = Path(__file__).resolve().parent / "data" / "repair_cases.jsonl"


def repair_messages(limit: int) -> list[tuple[str, list, list]]:
    """(task id, repair prompt, first-attempt prompt) as chat messages, built as the agent's codegen
    and repair chains build them."""
    from ragcoder.agent.checks import extract_example_tests
    from ragcoder.chains.prompting.codegen import _prompt_vars
    from ragcoder.chains.prompting.prompts import codegen_prompt, repair_prompt

    cases = [json.loads(line) for line in REPAIR_CASES.read_text().splitlines() if line.strip()][:limit]
    prompts = []
    for case in cases:
        variables = _prompt_vars({**case, "tests": extract_example_tests(case["instruction"])})
        repair = repair_prompt().invoke(variables).to_messages()
        prompts.append((case["task_id"], repair, codegen_prompt().invoke(variables).to_messages()))
    return prompts


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="qwen2.5-coder-1.5b-instruct", help="known name, HF folder or .gguf"
    )
    parser.add_argument("--quantize", default="auto", choices=["auto", "int8", "none"])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="for parts 1 and 2")
    parser.add_argument("--batch", type=int, default=8, help="prompts in part 2")
    parser.add_argument("--repairs", type=int, default=8, help="repair prompts in part 3 (at most 8)")
    parser.add_argument(
        "--lookup-tokens", type=int, default=0, help="prompt-lookup draft length (0: the default)"
    )
    parser.add_argument("--only-repairs", action="store_true", help="run part 3 alone")
    args = parser.parse_args()

    import torch
    from ragcoder.chains.llm.chat_model import load_chat_model, load_model_weights

    chat, load_s = _timed(
        lambda: load_chat_model(
            args.model, quantize=args.quantize, max_new_tokens=args.max_new_tokens, batch_size=args.batch
        )
    )
    weights = load_model_weights(args.model, quantize=args.quantize)
    model, tokenizer = weights.model, weights.tokenizer
    print(
        f"model {args.model}: {weights.description}, {torch.get_num_threads()} threads, ready in {load_s:.1f}s "
        f"(load {weights.load_s:.1f}s, quantize {weights.quantize_s:.1f}s)"
    )
    chat.invoke("Say hi.", max_new_tokens=4)  # warm-up
    # every prompt read in full (part 1's bare generate does; 3c turns reuse back on)
    chat.llm.reuse_prefix = False

    if not args.only_repairs:
        # 1. wrapper overhead
        question = QUESTIONS[0]
        prompt = chat._to_chat_prompt(chat._convert_input(question).to_messages())
        encoded = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)

        def bare() -> int:
            with torch.inference_mode():
                out = model.generate(**encoded, max_new_tokens=args.max_new_tokens, do_sample=False)
            return out.shape[1] - encoded["input_ids"].shape[1]

        bare_rates, chat_rates = [], []
        for _ in range(2):  # alternate, best of two each: the machine is shared and noisy
            n_bare, t_bare = _timed(bare)
            message, t_chat = _timed(lambda: chat.invoke(question))
            bare_rates.append(n_bare / t_bare)
            chat_rates.append(message.usage_metadata["output_tokens"] / t_chat)
        bare_rate, chat_rate = max(bare_rates), max(chat_rates)
        overhead = (bare_rate / chat_rate - 1) * 100
        print(
            f"1. chat model {chat_rate:6.1f} tok/s vs bare generate {bare_rate:6.1f} tok/s: "
            f"overhead {overhead:+.1f}% (target <= 5%)"
        )

        # 2. batched vs sequential
        prompts = (QUESTIONS * ((args.batch + len(QUESTIONS) - 1) // len(QUESTIONS)))[: args.batch]
        sequential, t_seq = _timed(lambda: [chat.invoke(p) for p in prompts])
        batched, t_batch = _timed(lambda: chat.batch(prompts))
        tokens_seq = sum(m.usage_metadata["output_tokens"] for m in sequential)
        tokens_batch = sum(m.usage_metadata["output_tokens"] for m in batched)
        same = sum(a.content == b.content for a, b in zip(sequential, batched, strict=True))
        ratio = (tokens_batch / t_batch) / (tokens_seq / t_seq)
        print(
            f"2. {len(prompts)} prompts batched {tokens_batch / t_batch:6.1f} tok/s ({t_batch:.1f}s) vs sequential "
            f"{tokens_seq / t_seq:6.1f} tok/s ({t_seq:.1f}s): {ratio:.2f}x (target >= 2x); "
            f"{same}/{len(prompts)} identical"
        )

    # 3. real repair prompts, one at a time, with and without prompt lookup
    repairs = repair_messages(args.repairs)
    lookup = args.lookup_tokens or True  # True: the chat model's default draft length
    passes: list[int] = []  # input lengths of the model's forward passes, to count tokens per pass
    forward = model.forward

    def counted(*a, **kw):
        passes.append(int(kw["input_ids"].shape[1]) if kw.get("input_ids") is not None else 0)
        return forward(*a, **kw)

    model.forward = counted
    plain_tokens = look_tokens = 0
    t_plain = t_look = t_prefill = 0.0
    identical = look_passes = 0
    looked_answers = []
    for task_id, messages, _ in repairs:
        encoded = tokenizer([chat._to_chat_prompt(messages)], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            _, prefill_s = _timed(model, **encoded)
        plain, plain_s = _timed(chat.invoke, messages, max_new_tokens=400)
        passes.clear()
        looked, look_s = _timed(chat.bind(prompt_lookup=lookup).invoke, messages, max_new_tokens=400)
        n_plain, n_look = plain.usage_metadata["output_tokens"], looked.usage_metadata["output_tokens"]
        looked_answers.append(looked)
        plain_tokens, look_tokens = plain_tokens + n_plain, look_tokens + n_look
        t_plain, t_look, t_prefill = t_plain + plain_s, t_look + look_s, t_prefill + prefill_s
        identical += plain.content == looked.content
        look_passes += len(passes) - 1  # the first pass is the prefill
        print(
            f"   {task_id:>13}: {encoded['input_ids'].shape[1]} prompt tokens (prefill {prefill_s:.1f}s); "
            f"without lookup {n_plain} tokens in {plain_s:.1f}s, with lookup {n_look} tokens in {look_s:.1f}s; "
            f"identical: {plain.content == looked.content}"
        )
    model.forward = forward
    rate_plain, rate_look = plain_tokens / t_plain, look_tokens / t_look
    decode_plain = plain_tokens / (t_plain - t_prefill)
    decode_look = look_tokens / (t_look - t_prefill)
    print(
        f"3. {len(repairs)} repair prompts, prompt lookup {rate_look:5.1f} tok/s vs without {rate_plain:5.1f} tok/s: "
        f"{rate_look / rate_plain:.2f}x (target >= 2.5x); decoding alone (prefill taken out) "
        f"{decode_look:5.1f} vs {decode_plain:5.1f} tok/s: {decode_look / decode_plain:.2f}x; "
        f"{look_tokens / max(1, look_passes):.1f} tokens per lookup pass; {identical}/{len(repairs)} identical"
    )
    # 3b. several repairs at once (batch runs): one left-padded batch vs lookup one at a time
    batched, t_batch = _timed(lambda: chat.batch([m for _, m, _ in repairs], max_new_tokens=400))
    batch_tokens = sum(m.usage_metadata["output_tokens"] for m in batched)
    same = sum(a.content == b.content for a, b in zip(batched, looked_answers, strict=True))
    print(
        f"3b. the {len(repairs)} repair prompts as one batch {batch_tokens / t_batch:5.1f} tok/s ({t_batch:.1f}s) "
        f"vs prompt lookup one at a time {rate_look:5.1f} tok/s ({t_look:.1f}s): "
        f"{(batch_tokens / t_batch) / rate_look:.2f}x; {same}/{len(repairs)} identical"
    )
    # 3c. in the loop: each repair after its first attempt's prompt, reusing the prefix they share
    from ragcoder.chains.llm.prefix_cache import prefix_cache_for

    chat.llm.reuse_prefix = True
    store = prefix_cache_for(model)

    def after_first_attempt(repair: list, first: list, **kwargs):
        store.clear()
        chat.invoke(first, max_new_tokens=1)  # the first attempt's prompt, as the loop left it
        return _timed(chat.invoke, repair, max_new_tokens=400, **kwargs)

    warm = {"plain": [0, 0.0], "lookup": [0, 0.0]}
    shared = same = 0
    for (_, repair, first), cold in zip(repairs, looked_answers, strict=True):
        plain, plain_s = after_first_attempt(repair, first)
        looked, look_s = after_first_attempt(repair, first, prompt_lookup=lookup)
        shared += looked.usage_metadata.get("input_token_details", {}).get("cache_read", 0)
        same += looked.content == cold.content
        for key, message, seconds in (("plain", plain, plain_s), ("lookup", looked, look_s)):
            warm[key][0] += message.usage_metadata["output_tokens"]
            warm[key][1] += seconds
    rate_plain_warm, rate_look_warm = (warm[k][0] / warm[k][1] for k in ("plain", "lookup"))
    prompt_tokens = sum(
        len(tokenizer(chat._to_chat_prompt(r), add_special_tokens=False)["input_ids"]) for _, r, _ in repairs
    )
    print(
        f"3c. the {len(repairs)} repairs after their first attempt ({shared}/{prompt_tokens} prompt tokens reused): "
        f"prompt lookup {rate_look_warm:5.1f} tok/s vs without {rate_plain_warm:5.1f} tok/s: "
        f"{rate_look_warm / rate_plain_warm:.2f}x (target >= 2.5x); against part 3's cold repairs: "
        f"{rate_look_warm / rate_look:.2f}x with lookup, {rate_plain_warm / rate_plain:.2f}x without; "
        f"{same}/{len(repairs)} lookup answers identical to cold"
    )
    if weights.description.startswith("int8"):
        print(
            "   note: under int8 a multi-token pass (a batch, prompt lookup's verify step) computes the fp32 "
            "attention in another order; int8 rounding can amplify that last-bit difference into another "
            "greedy pick. In fp32 only near ties can flip"
        )


if __name__ == "__main__":
    main()
