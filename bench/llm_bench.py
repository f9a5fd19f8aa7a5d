"""Local LLM throughput, measured side by side in one run.

1. chat model (``LocalChatModel.invoke``) vs bare ``model.generate``, same prompt and settings:
   the wrapper's overhead (target <= 5%);
2. 8 prompts through ``.batch()`` (one left-padded generate) vs one by one (target >= 2x);
3. a repair prompt with vs without prompt-lookup decoding (target >= 2.5x, identical output), as the
   chat model answers it and (3b) at a fixed number of new tokens, so the two decode the same length.

    python bench/llm_bench.py                      # Qwen 1.5B int8 (installed), a few minutes
    python bench/llm_bench.py --model smollm2-135m-instruct --quantize none
"""

from __future__ import annotations

import argparse
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

BROKEN_CODE = '''def parse_records(lines):
    """Parse 'name,age,city' lines into dicts, skipping blank lines and comments."""
    records = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, age, city = line.split(",")
        records.append({"name": name.strip(), "age": int(age), "city": city.strip(), "line": number})
    return records


def average_age(records):
    total = sum(r["age"] for r in records)
    return total / len(records)


def oldest(records):
    return max(records, key=lambda r: r["age"])["name"]


def by_city(records):
    groups = {}
    for r in records:
        groups.setdefault(r["city"], []).append(r["name"])
    return groups
'''

REPAIR_PROMPT = (
    "This code fails its test.\n\n```python\n" + BROKEN_CODE + "```\n\n"
    "Test: `assert average_age([]) == 0`\n"
    'Error:\nTraceback (most recent call last):\n  File "test.py", line 3, in <module>\n'
    '  File "solution.py", line 16, in average_age\n    return total / len(records)\n'
    "ZeroDivisionError: division by zero\n\n"
    "Fix the bug: average_age must return 0 for no records. Reply with the complete corrected file "
    "(all four functions) in one ```python block, nothing else."
)


def _timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="qwen2.5-coder-1.5b-instruct", help="known name, HF folder or .gguf"
    )
    parser.add_argument("--quantize", default="auto", choices=["auto", "int8", "none"])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="for parts 1 and 2")
    parser.add_argument("--batch", type=int, default=8, help="prompts in part 2")
    args = parser.parse_args()

    import torch

    from chains.llm import load_chat_model, load_model_weights

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

    # 3. repair prompt, prompt lookup
    plain, t_plain = _timed(lambda: chat.invoke(REPAIR_PROMPT, max_new_tokens=400))
    looked, t_look = _timed(lambda: chat.bind(prompt_lookup=True).invoke(REPAIR_PROMPT, max_new_tokens=400))
    rate_plain = plain.usage_metadata["output_tokens"] / t_plain
    rate_look = looked.usage_metadata["output_tokens"] / t_look
    print(
        f"3. repair prompt with prompt lookup {rate_look:6.1f} tok/s vs without {rate_plain:6.1f} tok/s: "
        f"{rate_look / rate_plain:.2f}x (target >= 2.5x); {looked.usage_metadata['output_tokens']} vs "
        f"{plain.usage_metadata['output_tokens']} tokens, identical output: {plain.content == looked.content}"
    )
    # 3b. the same, at a fixed length: when the two outputs differ (int8), 3 compares answers of
    # different lengths, whose prefill shares differ; here both decode exactly the same number of tokens
    repair = tokenizer(
        [chat._to_chat_prompt(chat._convert_input(REPAIR_PROMPT).to_messages())],
        return_tensors="pt",
        add_special_tokens=False,
    )
    fixed = 160

    def decode(**lookup: int) -> None:
        with torch.inference_mode():
            model.generate(**repair, max_new_tokens=fixed, min_new_tokens=fixed, do_sample=False, **lookup)

    _, t_fixed_plain = _timed(decode)
    _, t_fixed_look = _timed(lambda: decode(prompt_lookup_num_tokens=10))
    print(
        f"3b. repair prompt, exactly {fixed} new tokens (bare generate): prompt lookup "
        f"{fixed / t_fixed_look:6.1f} tok/s vs without {fixed / t_fixed_plain:6.1f} tok/s: "
        f"{t_fixed_plain / t_fixed_look:.2f}x (target >= 2.5x)"
    )
    if weights.description.startswith("int8"):
        print(
            "   note: under int8 a multi-token pass (a batch, prompt lookup's verify step) computes the fp32 "
            "attention in another order; int8 rounding can amplify that last-bit difference into another "
            "greedy pick. fp32/bf16 outputs are identical"
        )


if __name__ == "__main__":
    main()
