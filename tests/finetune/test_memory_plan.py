"""The trainer fits batch size and gradient checkpointing to free memory before the first step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragcoder.finetune.memory import GIB, estimate_bytes, plan_memory

QWEN_15B = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "vocab_size": 151936,
}
SIZE = {"params": 1_777_000_000, "trainable": 18_500_000, "dtype_bytes": 4}


def _plan(available_gib: float | None, batch: int = 4, accum: int = 2, checkpointing: bool = False):
    available = None if available_gib is None else int(available_gib * GIB)
    return plan_memory(
        QWEN_15B,
        **SIZE,
        longest=768,
        batch_size=batch,
        grad_accum=accum,
        checkpointing=checkpointing,
        available=available,
        base="qwen",
    )


def test_the_estimate_grows_with_the_batch_and_shrinks_with_checkpointing() -> None:
    def need(batch: int, ckpt: bool) -> float:
        return estimate_bytes(QWEN_15B, **SIZE, batch=batch, longest=768, checkpointing=ckpt) / GIB

    assert need(4, False) > 40  # what was killed at 24 GB with the old defaults
    assert 17 < need(4, True) < 22  # measured: 19.4 GiB peak
    assert 12 < need(2, True) < 15  # measured: 12.9 GiB peak
    assert need(1, True) < need(2, True) < need(1, False) < need(4, True)


def test_only_the_adapted_top_layers_count_towards_activations() -> None:
    def need(layers: int | None) -> float:
        return (
            estimate_bytes(QWEN_15B, **SIZE, batch=2, longest=768, checkpointing=False, graph_layers=layers)
            / GIB
        )

    assert need(8) < need(14) < need(None) == need(28) == need(99)
    assert need(None) - need(8) > 4  # 20 layers' activations at batch 2 x 768 tokens


def test_settings_that_fit_are_kept() -> None:
    plan = _plan(200)
    assert (plan.batch_size, plan.grad_accum, plan.gradient_checkpointing, plan.note) == (4, 2, False, "")
    assert _plan(None).note == ""  # free memory unknown: nothing is changed


def test_a_large_model_on_24_gb_gets_checkpointing_and_a_smaller_batch_with_the_same_effective_batch() -> (
    None
):
    plan = _plan(21)
    assert plan.gradient_checkpointing and plan.batch_size * plan.grad_accum == 8 and plan.batch_size < 4
    assert plan.estimate_bytes <= 0.85 * 21 * GIB
    assert plan.note.startswith("memory: batch 4 x 768 tokens needs about") and "\n" not in plan.note
    odd = _plan(14, batch=3, accum=1)  # 3 -> 1: the accumulation rounds up, never down
    assert odd.batch_size == 1 and odd.grad_accum == 3


def test_too_little_memory_stops_with_one_line_that_says_what_to_change() -> None:
    with pytest.raises(SystemExit) as stop:
        _plan(8)
    message = str(stop.value)
    assert "\n" not in message and "even at batch 1 with gradient checkpointing" in message
    assert "--max-len" in message and "smaller --base" in message


def test_the_trainer_applies_the_plan_and_saves_it_in_the_config(tmp_path: Path, monkeypatch) -> None:
    from ragcoder.chains.llm.chat_model import make_tiny_random_model
    from ragcoder.finetune import memory
    from ragcoder.finetune.train import main

    tiny = make_tiny_random_model(tmp_path / "tiny")
    long_code = "".join(f"    x{j} = {j}\n" for j in range(80))  # every row is cut to --max-len
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": f"Return {i}.", "response": f"def f():\n{long_code}"}) + "\n"
            for i in range(4)
        ),
        encoding="utf-8",
    )
    shape = json.loads((tiny / "config.json").read_text())
    params = 0  # the tiny model's weights are a few MB: the logits dominate its estimate

    def need(batch: int, ckpt: bool) -> int:
        return memory.estimate_bytes(
            shape, params=params, trainable=0, dtype_bytes=4, batch=batch, longest=256, checkpointing=ckpt
        )

    free = int(need(1, True) / memory.HEADROOM * 1.05)  # batch 1 with checkpointing fits, batch 4 does not
    assert need(4, False) > memory.HEADROOM * free
    monkeypatch.setattr(memory, "available_bytes", lambda device: free)
    args = [
        "--base",
        str(tiny),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "a"),
        "--max-steps",
        "1",
        "--max-len",
        "256",
        "--lora-r",
        "2",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
    ]
    main(args)
    saved = json.loads((tmp_path / "a" / "train_config.json").read_text())["config"]
    assert (
        saved["gradient_checkpointing"]
        and saved["batch_size"] * saved["grad_accum"] == 4
        and saved["batch_size"] < 4
    )
    monkeypatch.setattr(memory, "available_bytes", lambda device: memory.OVERHEAD // 2)
    with pytest.raises(SystemExit, match="even at batch 1"):
        main([*args[:5], str(tmp_path / "b"), *args[6:]])
    main([*args[:5], str(tmp_path / "c"), *args[6:], "--no-memory-guard"])  # the user's settings as given
    assert json.loads((tmp_path / "c" / "train_config.json").read_text())["config"]["batch_size"] == 4
