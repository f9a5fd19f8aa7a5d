"""The int8 file of an installed model: the embedding left out and rebuilt bit for bit from the
GGUF, stored when it cannot be, older formats still read, a GGUF that no longer matches caught.
Real-model checks (SmolLM2: the default's layout, a version change, a damaged file) are slow."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

PROMPTS = ["def fibonacci(n):", "Write a function that reverses a string."]


def tensors(model) -> dict:
    """Every tensor of a model (int8 weights as their integers, scales and zero points)."""
    import torch

    out = {}
    for key, value in model.state_dict().items():
        for i, item in enumerate(value if isinstance(value, tuple) else (value,)):
            if isinstance(item, torch.Tensor) and item.is_quantized:
                out[f"{key}.{i}"] = (
                    item.int_repr(),
                    item.q_per_channel_scales(),
                    item.q_per_channel_zero_points(),
                )
            elif isinstance(item, torch.Tensor):
                out[f"{key}.{i}"] = (item,)
    return out


def assert_same_tensors(got, want) -> None:
    import torch

    got, want = tensors(got), tensors(want)
    assert got.keys() == want.keys()
    different = [k for k in got if not all(torch.equal(a, b) for a, b in zip(got[k], want[k], strict=True))]
    assert not different, different[:5]


def greedy(model, tokenizer, n: int = 16) -> list[list[int]]:
    import torch

    outs = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            outs.append(model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=0)[0].tolist())
    return outs


def write_gguf_embedding(path: Path, weight) -> None:
    """A GGUF holding only ``token_embd.weight`` (Q8_0), as an install's GGUF holds it."""
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    writer = GGUFWriter(str(path), "llama")
    q8 = quants.quantize(weight.numpy(), GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture
def int8_tiny(model_tiny_dir: Path, tmp_path: Path):
    """(folder, int8 model, tokenizer): the tiny model, its embedding as a GGUF install gives it
    (Q8_0 dequantized, through fp16), quantized to int8; the GGUF beside it in ``folder``."""
    import torch
    from gguf import GGMLQuantizationType, quants
    from ragcoder.chains.llm.int8 import quantize_int8
    from ragcoder.chains.llm.weights import load_dense_model, load_tokenizer

    folder = tmp_path / "model"
    folder.mkdir()
    model = load_dense_model(model_tiny_dir, dtype=torch.float32).eval()
    embedding = model.get_input_embeddings().weight
    write_gguf_embedding(folder / "model.gguf", embedding.detach())
    q8 = quants.quantize(embedding.detach().numpy(), GGMLQuantizationType.Q8_0)
    rebuilt = torch.from_numpy(quants.dequantize(q8, GGMLQuantizationType.Q8_0).copy())
    with torch.no_grad():
        embedding.copy_(rebuilt.half().float())
    model.config.tie_word_embeddings = False
    return folder, quantize_int8(model), load_tokenizer(model_tiny_dir)


def test_the_embedding_is_left_out_and_rebuilt_bit_for_bit_from_the_gguf(int8_tiny) -> None:
    import torch
    from ragcoder.chains.llm.int8_cache import cache_name, read_int8_cache, write_int8_cache

    folder, model, tokenizer = int8_tiny
    reference = copy.deepcopy(model)
    path = folder / cache_name()
    record = write_int8_cache(model, path)
    assert record is not None and record["embedding"] == "gguf" and record["size"] == path.stat().st_size
    torch.save(model, folder / "whole.pt")  # the v3 form: the embedding inside
    embedding_bytes = model.get_input_embeddings().weight.numel() * 4
    assert path.stat().st_size < (folder / "whole.pt").stat().st_size - 0.9 * embedding_bytes
    assert_same_tensors(model, reference)  # writing left the model in memory whole

    loaded = read_int8_cache(path)
    assert_same_tensors(loaded, reference)
    assert greedy(loaded, tokenizer) == greedy(reference, tokenizer)


def test_the_embedding_is_stored_when_no_gguf_can_rebuild_it(int8_tiny) -> None:
    import torch
    from ragcoder.chains.llm.int8_cache import cache_name, read_int8_cache, write_int8_cache

    folder, model, _ = int8_tiny
    (folder / "model.gguf").unlink()
    record = write_int8_cache(model, folder / cache_name())
    assert record is not None and record["embedding"] == "file"
    loaded = read_int8_cache(folder / cache_name())
    assert_same_tensors(loaded, model)
    assert loaded.get_input_embeddings().weight.dtype == torch.float32


def test_a_gguf_that_no_longer_matches_is_caught_and_the_file_rebuilt(int8_tiny) -> None:
    from ragcoder.chains.llm.int8_cache import cache_name, read_int8_cache, write_int8_cache

    folder, model, _ = int8_tiny
    path = folder / cache_name()
    write_int8_cache(model, path)
    write_gguf_embedding(folder / "model.gguf", model.get_input_embeddings().weight.detach() * 2)
    assert read_int8_cache(path) is None and not path.exists()  # removed: quantized again next load


def test_an_older_format_file_still_loads(int8_tiny) -> None:
    import torch
    from ragcoder.chains.llm.int8_cache import cache_name
    from ragcoder.chains.llm.loading import read_cached_int8

    folder, model, _ = int8_tiny
    legacy = folder / cache_name("int8rows-chan-v3")
    torch.save(model, legacy)  # what an install before v4 holds
    assert_same_tensors(read_cached_int8(folder / cache_name()), model)
    assert legacy.exists()  # read, not rewritten or removed


# --- the default's layout on the real SmolLM2 (slow) -------------------------------------------


@pytest.fixture
def slim_smollm2(model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An old-layout copy of the installed SmolLM2 (full HF folder) under a name that, like the
    default, does not keep its HF weights."""
    from ragcoder.chains.llm.convert import install_model
    from ragcoder.chains.llm.models import KNOWN_MODELS, KnownModel, model_dir

    monkeypatch.delenv("RAGCODER_CACHE_DIR")
    source = install_model("smollm2-135m-instruct").path  # a no-op once installed
    monkeypatch.setenv("RAGCODER_CACHE_DIR", str(model_cache_dir))
    name = "smollm2-slim-test"
    known = KNOWN_MODELS["smollm2-135m-instruct"]
    monkeypatch.setitem(KNOWN_MODELS, name, KnownModel(**{**known.__dict__, "name": name, "keep_hf": False}))
    folder = model_dir(name)
    folder.mkdir(parents=True)
    shutil.copy(source / "model.gguf", folder / "model.gguf")
    shutil.copytree(source / "hf", folder / "hf")
    manifest = json.loads((source / "installed.json").read_text())
    (folder / "installed.json").write_text(json.dumps({**manifest, "name": name}))
    return name


@pytest.mark.slow
def test_the_default_layout_keeps_only_what_int8_needs_and_loads_the_same_model(
    slim_smollm2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from ragcoder.chains.llm import int8_cache
    from ragcoder.chains.llm.chat_model import clear_model_cache, load_model_weights
    from ragcoder.chains.llm.installed_parts import ensure_default_parts
    from ragcoder.chains.llm.int8 import quantize_int8
    from ragcoder.chains.llm.models import model_dir
    from ragcoder.chains.llm.weights import load_dense_model, load_tokenizer, sha256_of

    folder = model_dir(slim_smollm2)
    reference = quantize_int8(load_dense_model(folder / "hf", dtype=torch.float32).eval())  # the old path
    tokenizer = load_tokenizer(folder / "hf")
    want = greedy(reference, tokenizer)

    lines: list[str] = []
    manifest = ensure_default_parts(slim_smollm2, say=lines.append)
    path = folder / int8_cache.cache_name()
    kept = sorted(p.name for p in (folder / "hf").iterdir())
    assert "model.safetensors" not in kept and {"config.json", "tokenizer.json"} <= set(kept)
    assert sorted(p.name for p in folder.glob("int8*.pt")) == [path.name]
    parts = manifest["parts"]
    assert parts[path.name]["sha256"] == sha256_of(path) and parts[path.name]["embedding"] == "gguf"
    assert sorted(parts["hf"]["files"]) == kept and "model.gguf" in parts
    assert any("dropped the HF weights" in line for line in lines)

    try:
        loaded = load_model_weights(slim_smollm2, quantize="int8", device="cpu")
        assert loaded.description == "int8-dynamic cpu (cached)"
        assert_same_tensors(loaded.model, reference)
        assert greedy(loaded.model, tokenizer) == want
        clear_model_cache()

        damaged = bytearray(path.read_bytes())  # same size, other content: only the hash sees it
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
        lines.clear()
        ensure_default_parts(slim_smollm2, say=lines.append)
        assert any("quantizing" in line for line in lines) and any("rebuilding" in line for line in lines)
        assert (
            sha256_of(path)
            == json.loads((folder / "installed.json").read_text())["parts"][path.name]["sha256"]
        )

        real_name = int8_cache.cache_name  # another torch: its own file, made from the GGUF
        monkeypatch.setattr(
            int8_cache,
            "cache_name",
            lambda fmt=int8_cache.CACHE_FORMAT: real_name(fmt).replace("-torch", "-torch9"),
        )
        rebuilt = load_model_weights(slim_smollm2, quantize="int8", device="cpu")
        assert (
            rebuilt.description == "int8-dynamic cpu" and not (folder / "hf" / "model.safetensors").exists()
        )
        assert [p.name for p in folder.glob("int8*.pt")] == [int8_cache.cache_name()]
        assert int8_cache.cache_name() in json.loads((folder / "installed.json").read_text())["parts"]
        assert_same_tensors(rebuilt.model, reference)
    finally:
        clear_model_cache()
