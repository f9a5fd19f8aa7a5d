"""Fit a training run into memory before it starts, instead of being killed by the kernel mid-step.

Qwen2.5-Coder-1.5B with the defaults (batch 4, no gradient checkpointing, rows up to 768 tokens)
needs far more than 24 GB on CPU, and was killed there with no message. Before the first step the
trainer now estimates the peak and, when it does not fit, turns on gradient checkpointing, then
halves the batch (doubling ``grad_accum``, so the effective batch stays the same); when batch 1
with checkpointing still does not fit it stops with one line that says what to change.
``--no-memory-guard`` keeps the settings as given.

The estimate is simple arithmetic on the model's shape, calibrated against measured peak RSS
(docs/results.md, "Fixed in session 6"); it is meant to be right within a few GB, which is
what the choice needs.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
# Activations kept for backward, per token and layer, in units of hidden_size (h) and
# intermediate_size (i): a LLaMA/Qwen block keeps about 10 h-wide tensors (norms, q/k/v, attention
# output, residuals) and 4 i-wide ones (gate, up, act, product); LoRA dropout copies each adapted
# linear's input (5 h + 1 h + 1 i).
PER_TOKEN_LAYER = (16, 5)
ATTENTION_COPIES = 1  # heads x L x L per layer (the attention probabilities), fitted to measured peaks
LOGIT_COPIES = 4  # logits, log-softmax and both gradients, all (tokens x vocab) in fp32
# The margin covers what the count misses (allocator slack, recomputation buffers); the measured
# peaks it was fitted to are in docs/results.md ("Fixed in session 6": measured peak against this
# estimate, beside the `ragcoder finetune train` command).
MARGIN = 1.5
HEADROOM = 0.85  # plan for 85% of what is free: the OS and other processes need the rest
OVERHEAD = 1 * GIB  # python, torch, tokenizer, the dataset


@dataclass(frozen=True)
class MemoryPlan:
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    estimate_bytes: int
    available_bytes: int | None
    note: str = ""  # what was changed and why; "" when the settings were kept


def estimate_bytes(
    shape: dict[str, int],
    *,
    params: int,
    trainable: int,
    dtype_bytes: int,
    batch: int,
    longest: int,
    checkpointing: bool,
    graph_layers: int | None = None,
) -> int:
    """Peak bytes of one training step: weights, LoRA optimizer state, activations, logits.

    ``graph_layers``: how many (top) layers hold adapters and so keep activations for backward;
    None = all. The logits are counted for every token, though the trainer computes them only for
    the response's: a margin that costs nothing when the response is most of the row."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    layers = min(graph_layers or shape["num_hidden_layers"], shape["num_hidden_layers"])
    tokens = batch * longest
    per_layer = (PER_TOKEN_LAYER[0] * h + PER_TOKEN_LAYER[1] * i) * tokens * dtype_bytes
    attention = ATTENTION_COPIES * batch * shape["num_attention_heads"] * longest * longest * dtype_bytes
    if checkpointing:  # each layer's input is kept; in backward one layer is recomputed, with its grads
        activations = layers * h * tokens * dtype_bytes + 2 * (per_layer + attention)
    else:
        activations = layers * (per_layer + attention)
    logits = LOGIT_COPIES * tokens * shape["vocab_size"] * 4
    weights = params * dtype_bytes + trainable * 4 * 4  # LoRA weights, grads, Adam m and v in fp32
    return int(weights + MARGIN * (activations + logits) + OVERHEAD)


def available_bytes(device: str) -> int | None:
    """Free memory on ``device`` (None when it cannot be told)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/meminfo", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def lora_params(model: Any, target_modules: list[str], r: int, layers: list[int] | None = None) -> int:
    """Trainable parameters LoRA will add: r x (in + out) per adapted linear (in ``layers`` only,
    when given: the decoder layer index is the number in the module's name)."""
    import torch

    def wanted(name: str) -> bool:
        if layers is None:
            return True
        numbers = [int(part) for part in name.split(".") if part.isdigit()]
        return bool(numbers) and numbers[0] in layers

    return sum(
        r * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules and wanted(name)
    )


def model_shape(model: Any) -> dict[str, int]:
    config = model.config
    return {
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "vocab_size": config.vocab_size,
    }


def plan_memory(
    shape: dict[str, int],
    *,
    params: int,
    trainable: int,
    dtype_bytes: int,
    longest: int,
    batch_size: int,
    grad_accum: int,
    checkpointing: bool,
    available: int | None,
    base: str,
    resident: int = 0,
    graph_layers: int | None = None,
) -> MemoryPlan:
    """The first of: the settings as given, + checkpointing, + halved batches; or SystemExit.

    ``available`` is what is free now; ``resident`` is the part of the estimate already in memory
    (the loaded weights), which ``available`` has already paid for.
    """

    def need(batch: int, ckpt: bool) -> int:
        return estimate_bytes(
            shape,
            params=params,
            trainable=trainable,
            dtype_bytes=dtype_bytes,
            batch=batch,
            longest=longest,
            checkpointing=ckpt,
            graph_layers=graph_layers,
        )

    def fits(estimate: int) -> bool:
        return available is not None and estimate - resident <= HEADROOM * available

    if available is None or fits(need(batch_size, checkpointing)):
        return MemoryPlan(batch_size, grad_accum, checkpointing, need(batch_size, checkpointing), available)
    given = need(batch_size, checkpointing)
    batch, accum = batch_size, grad_accum
    while True:
        estimate = need(batch, True)
        if fits(estimate):
            changes = [] if checkpointing else ["gradient checkpointing on"]
            if batch != batch_size:
                changes.append(
                    f"batch {batch_size} -> {batch} with grad_accum {grad_accum} -> {accum} "
                    f"(same effective batch)"
                )
            note = (
                f"memory: batch {batch_size} x {longest} tokens needs about {given / GIB:.1f} GiB "
                f"({resident / GIB:.1f} of it loaded), {available / GIB:.1f} GiB more is free; "
                f"{', '.join(changes)} (about {estimate / GIB:.1f} GiB; --no-memory-guard keeps "
                f"the settings)"
            )
            return MemoryPlan(batch, accum, True, estimate, available, note)
        if batch == 1:
            assert available is not None
            raise SystemExit(
                f"finetune: {base} needs about {estimate / GIB:.1f} GiB even at batch 1 with gradient "
                f"checkpointing for {longest}-token examples ({resident / GIB:.1f} of it loaded), and "
                f"{available / GIB:.1f} GiB more is free; "
                f"lower --max-len, free memory, or train a smaller --base"
            )
        batch = max(1, batch // 2)
        accum = math.ceil(batch_size * grad_accum / batch)
