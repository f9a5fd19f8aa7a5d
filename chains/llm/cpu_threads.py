"""How many torch threads a model runs on, on CPU: one rule, whatever runs the model.

The thread count changes int8 arithmetic (how a matrix product is split changes its rounding), so
the same model must get the same count in-process, in ``ragcoder serve`` and in each Ray actor, or
the same task can get different code. The count is therefore chosen per model, by what is
fastest for it, never by sharing the cores among workers (docs/scale.md, measured with
``bench/threads_bench.py``):

- a narrow model (hidden size under :data:`NARROW_WIDTH`, e.g. SmolLM2-135M, 576) runs on 1 thread:
  its per-token operations are so small that waking a second thread costs more than it saves;
- a wider one (Qwen2.5-Coder-1.5B, 1536) runs on every core this process may use.

``RAGCODER_NUM_THREADS`` (or ``OMP_NUM_THREADS``) overrides the rule everywhere.
"""

from __future__ import annotations

import os
from typing import Any

NARROW_WIDTH = 1024
"""Models with a hidden size under this run on one thread (SmolLM2-135M: 1.5x faster than on 2)."""


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_override() -> int | None:
    """The thread count the environment asks for, or None."""
    wanted = os.environ.get("RAGCODER_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if not wanted:
        return None
    try:
        return max(1, int(wanted))
    except ValueError:
        from ragcoder.errors import ConfigError

        raise ConfigError(
            f"RAGCODER_NUM_THREADS / OMP_NUM_THREADS must be a whole number, not {wanted!r}",
            hint="unset it to let ragcoder choose per model",
        ) from None


def model_width(config: Any) -> int | None:
    """A transformers config's hidden size (``hidden_size``, or ``n_embd`` for GPT-2 style)."""
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    text_config = getattr(config, "text_config", None)  # multimodal configs nest the decoder's
    return model_width(text_config) if text_config is not None else None


def default_threads(width: int | None, cores: int | None = None) -> int:
    """The rule above, without the override: 1 for a narrow model, all ``cores`` otherwise (and
    when the width is unknown)."""
    if width is not None and width < NARROW_WIDTH:
        return 1
    return max(1, cores if cores is not None else available_cores())


def threads_for(width: int | None) -> int:
    """The torch threads a model of this hidden size runs on here: the override, else the rule."""
    return threads_override() or default_threads(width)


def set_torch_threads(config: Any) -> int:
    """Set torch's threads for a loaded model (its config); returns the count."""
    import torch

    threads = threads_for(model_width(config))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
