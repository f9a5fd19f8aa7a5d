"""The torch thread rule (chains/llm/cpu_threads.py): per model, the same in every mode."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from ragcoder.chains.llm.cpu_threads import (
    NARROW_WIDTH,
    default_threads,
    model_width,
    threads_for,
)

from ragcoder.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGCODER_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_a_narrow_model_runs_on_one_thread_and_a_wide_one_on_every_core() -> None:
    assert default_threads(576, cores=2) == 1  # SmolLM2-135M
    assert default_threads(NARROW_WIDTH - 1, cores=16) == 1
    assert default_threads(1536, cores=2) == 2  # Qwen2.5-Coder-1.5B
    assert default_threads(NARROW_WIDTH, cores=16) == 16
    assert default_threads(None, cores=4) == 4  # width unknown: all the cores, as before


def test_the_count_does_not_depend_on_how_many_workers_share_the_machine() -> None:
    # one rule, no workers argument: in-process, `ragcoder serve` and each Ray actor agree
    assert threads_for(576) == 1
    assert threads_for(1536) == default_threads(1536)


def test_the_environment_overrides_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_for(576) == 3
    monkeypatch.setenv("RAGCODER_NUM_THREADS", "2")  # ours first
    assert threads_for(576) == 2 and threads_for(4096) == 2
    monkeypatch.setenv("RAGCODER_NUM_THREADS", "two")
    with pytest.raises(ConfigError, match=r"RAGCODER_NUM_THREADS.*'two'"):
        threads_for(576)


def test_model_width_reads_the_configs_transformers_writes() -> None:
    assert model_width(SimpleNamespace(hidden_size=1536)) == 1536
    assert model_width(SimpleNamespace(n_embd=768)) == 768
    assert model_width(SimpleNamespace(text_config=SimpleNamespace(hidden_size=2048))) == 2048
    assert model_width(SimpleNamespace()) is None


def test_a_loaded_model_gets_its_own_count(model_tiny_dir: Path) -> None:
    import torch
    from ragcoder.chains.llm.chat_model import clear_model_cache, load_chat_model

    before = torch.get_num_threads()
    clear_model_cache()
    try:
        torch.set_num_threads(2)
        load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=4)  # 32 wide
        assert torch.get_num_threads() == 1
    finally:
        clear_model_cache()
        torch.set_num_threads(before)
