"""int8 on CPU, side by side in one run: torch's stock dynamic int8 (one activation scale per
tensor, one weight scale per matrix) vs ours (one activation scale per row), with weights per
matrix and per output channel (the default).

For each quantization of the same fp32 model:
1. agreement with fp32, teacher-forced on fp32's own greedy continuations of the prompts (each
   prompt alone, so batching plays no part): top-1 token agreement and KL(fp32 || int8);
2. batch invariance: greedy text of the prompts in one left-padded batch vs each prompt alone;
3. throughput: tokens/s one prompt at a time, and for the whole batch.

    python bench/int8_bench.py                     # Qwen 1.5B (installed), about 10 minutes
    python bench/int8_bench.py --model smollm2-135m-instruct --new-tokens 32
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROMPTS = [
    'def is_prime(n):\n    """Return True if n is prime."""\n',
    'def fib(n):\n    """Return the n-th Fibonacci number."""\n',
    'def reverse_words(s):\n    """Reverse the order of the words in s."""\n',
    "# merge two sorted lists\ndef merge(a, b):\n",
    "import re\n\ndef count_vowels(text):\n",
    "class Stack:\n    def __init__(self):\n",
    'def flatten(nested):\n    """Flatten a list of lists."""\n',
    "def gcd(a, b):\n",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)

    import torch
    from ragcoder.chains.llm.int8 import quantize_int8
    from ragcoder.chains.llm.models import resolve_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    resolved = resolve_model(args.model)
    kwargs = resolved.from_pretrained_kwargs()
    tokenizer = AutoTokenizer.from_pretrained(resolved.load_dir, **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id
    base = AutoModelForCausalLM.from_pretrained(resolved.load_dir, dtype=torch.float32, **kwargs).eval()

    def generate(model: object, prompts: list[str]) -> tuple[list[str], float]:
        encoded = tokenizer(prompts, return_tensors="pt", padding=True)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(  # type: ignore[attr-defined]
                **encoded,
                max_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=pad,
                min_new_tokens=args.new_tokens,
            )
        seconds = time.perf_counter() - started
        return [
            tokenizer.decode(row[encoded["input_ids"].shape[1] :], skip_special_tokens=True) for row in out
        ], seconds

    # fp32 references: each prompt's greedy continuation and fp32 logits along it
    references = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
            sequence = base.generate(
                input_ids=ids, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=pad
            )
            references.append((sequence, ids.shape[1], base(input_ids=sequence).logits[0].float()))

    rows = []
    for label, quantize in (
        (
            "torch int8, one scale per tensor",
            lambda m: torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8),
        ),
        ("ours, per row, weights per tensor", lambda m: quantize_int8(m, per_channel=False)),
        ("ours, per row, weights per channel", quantize_int8),
    ):
        model = quantize(copy.deepcopy(base))
        agreement, divergence = [], []
        with torch.inference_mode():
            for sequence, prompt_len, reference in references:
                logits = model(input_ids=sequence).logits[0].float()
                got, want = logits[prompt_len - 1 : -1], reference[prompt_len - 1 : -1]
                agreement.append((got.argmax(-1) == want.argmax(-1)).float().mean().item())
                divergence.append(
                    torch.nn.functional.kl_div(
                        got.log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="batchmean"
                    ).item()
                )
        generate(model, PROMPTS[:1])  # warm
        alone, alone_s = [], 0.0
        for prompt in PROMPTS:
            text, seconds = generate(model, [prompt])
            alone.append(text[0])
            alone_s += seconds
        batched, batch_s = generate(model, PROMPTS)
        tokens = len(PROMPTS) * args.new_tokens
        rows.append(
            (
                label,
                sum(agreement) / len(agreement),
                sum(divergence) / len(divergence),
                sum(a == b for a, b in zip(alone, batched, strict=True)),
                tokens / alone_s,
                tokens / batch_s,
            )
        )
        del model

    print(
        f"{resolved.name}: {len(PROMPTS)} prompts x {args.new_tokens} new tokens, {torch.get_num_threads()} threads"
    )
    print(
        f"{'int8':<34} {'top-1 vs fp32':>13} {'KL':>7} {'batch==alone':>12} {'tok/s 1':>8} {'tok/s batch':>11}"
    )
    for label, agree, kl, same, one, batch in rows:
        print(f"{label:<34} {agree:>13.3f} {kl:>7.3f} {same:>7}/{len(PROMPTS):<4} {one:>8.1f} {batch:>11.1f}")
    (_, _, kl0, _, one0, batch0), *ours = rows
    for label, _, kl1, _, one1, batch1 in ours:
        print(
            f"{label} / torch's: KL {kl1 / max(kl0, 1e-9):.2f}x, tok/s alone {one1 / one0:.2f}x, batch {batch1 / batch0:.2f}x"
        )


if __name__ == "__main__":
    main()
