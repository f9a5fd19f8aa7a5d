"""The pluggable generation engine: choosing it, the ONNX Runtime chat model, its conversion.

The ONNX tests run a tiny random llama converted by the real ONNX Runtime GenAI builder (fp32, so
its greedy output can be compared token for token with the torch path on the same weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from langchain_core.messages import HumanMessage
from ragcoder.chains.llm.engines import ENGINES, check_engine, choose_engine, onnx_folder
from ragcoder.chains.llm.models import KNOWN_MODELS, KnownModel, model_dir, resolve_model

from ragcoder.errors import ModelNotInstalled, UnknownEngine
from tests.engine_helpers import build_onnx_folder, make_tiny_onnx_source

PROMPTS = ["Write a function that adds two numbers.", "hello there, how are you today?", "x"]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_onnx_source(tmp_path_factory.mktemp("engine") / "tiny")


@pytest.fixture(scope="module")
def tiny_onnx(tiny_source: Path) -> Path:
    return build_onnx_folder(tiny_source, tiny_source.parent / "tiny-onnx")


@pytest.fixture(scope="module")
def ort_chat(tiny_onnx: Path):
    from ragcoder.chains.llm.ort_chat import load_ort_chat_model

    return load_ort_chat_model(tiny_onnx, max_new_tokens=24)


# -- choosing an engine -------------------------------------------------------------------------


def test_unknown_engine_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(UnknownEngine) as err:
        check_engine("vllm")
    assert str(err.value) == "unknown engine 'vllm'; known engines: auto, torch, ort"
    assert "\n" not in str(err.value) and err.value.hint
    assert [check_engine(e.upper()) for e in ENGINES] == list(ENGINES)


def test_unknown_engine_from_the_cli_is_an_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragcoder.cli.app import cli

    monkeypatch.setenv("RAGCODER_RUNTIME_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["serve", "--engine", "vllm", "--socket", str(tmp_path / "s.sock")])
    assert result.exit_code == 1
    line = result.output.splitlines()[0]  # the settings check names the flag and the known engines
    assert line.startswith("error: engine = 'vllm'") and "auto, torch, ort" in line


def test_auto_picks_onnx_only_where_the_form_exists(tiny_source: Path, tiny_onnx: Path) -> None:
    assert choose_engine(str(tiny_onnx)) == ("ort", tiny_onnx.resolve())
    assert choose_engine(str(tiny_source)) == ("torch", None)  # an HF folder: torch
    assert choose_engine(str(tiny_onnx), "auto", device="cuda") == ("torch", None)
    with pytest.raises(ModelNotInstalled, match="has no ONNX Runtime form"):
        choose_engine(str(tiny_source), "ort")


# -- the ONNX Runtime chat model ----------------------------------------------------------------


def test_onnx_greedy_output_is_the_torch_output_on_the_same_weights(ort_chat, tiny_source: Path) -> None:
    from ragcoder.chains.llm.chat_model import load_chat_model

    torch_chat = load_chat_model(str(tiny_source), quantize="none", max_new_tokens=24)
    for prompt in PROMPTS:
        ours, theirs = ort_chat.invoke(prompt), torch_chat.invoke(prompt)
        assert ours.content == theirs.content
        assert ours.usage_metadata["input_tokens"] == theirs.usage_metadata["input_tokens"]
        assert ours.usage_metadata["output_tokens"] == 24
        assert ours.response_metadata["finish_reason"] == "length"


def test_batch_is_one_generation_equal_to_one_by_one(ort_chat, monkeypatch: pytest.MonkeyPatch) -> None:
    single = [ort_chat.invoke(p).content for p in PROMPTS]
    calls: list[list[str]] = []
    generate = ort_chat.generator.generate

    def counted(prompts: list[str], **options: object) -> object:
        calls.append(prompts)
        return generate(prompts, **options)

    monkeypatch.setattr(ort_chat.generator, "generate", counted)
    batched = ort_chat.batch(PROMPTS)
    assert [m.content for m in batched] == single
    assert [len(c) for c in calls] == [3]  # one generation for the three prompts
    assert all(m.usage_metadata["output_tokens"] == 24 for m in batched)


def test_stream_adds_up_to_invoke_and_ends_with_usage(ort_chat) -> None:
    chunks = list(ort_chat.stream(PROMPTS[0]))
    assert "".join(c.content for c in chunks) == ort_chat.invoke(PROMPTS[0]).content
    assert len([c for c in chunks if c.content]) > 3
    assert chunks[-1].usage_metadata["output_tokens"] == 24
    assert chunks[-1].response_metadata["finish_reason"] == "length"


def test_stop_sequences_cut_invoke_stream_and_batch(ort_chat) -> None:
    full = ort_chat.invoke(PROMPTS[0]).content
    stop = full[10:14]
    cut = full[: full.index(stop)]
    assert ort_chat.invoke(PROMPTS[0], stop=[stop]).content == cut
    assert ort_chat.invoke(PROMPTS[0], stop=[stop]).response_metadata["finish_reason"] == "stop"
    assert "".join(c.content for c in ort_chat.stream(PROMPTS[0], stop=[stop])) == cut
    assert ort_chat.batch([PROMPTS[0], PROMPTS[1]], stop=[stop])[0].content == cut


def test_samples_are_seeded_and_n_of_them_read_the_prompt_once(
    ort_chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [HumanMessage(PROMPTS[0])]
    prefills: list[int] = []
    prefill = ort_chat.generator.decoder.prefill

    def counted(*args: object, **options: object) -> object:
        prefills.append(1)
        return prefill(*args, **options)

    monkeypatch.setattr(ort_chat.generator.decoder, "prefill", counted)
    first = ort_chat.generate([messages], n=4, temperature=1.0, seed=3).generations[0]
    assert len(first) == 4 and len(prefills) == 1
    texts = [g.text for g in first]
    assert len(set(texts)) > 1  # samples, not four copies
    again = ort_chat.generate([messages], n=4, temperature=1.0, seed=3).generations[0]
    assert [g.text for g in again] == texts
    # sample j is what a lone call seeded 3 + j draws, and what row j of a batch draws
    assert [ort_chat.invoke(messages, temperature=1.0, seed=3 + j).content for j in range(4)] == texts
    assert [m.content for m in ort_chat.batch([messages] * 4, temperature=1.0, seed=3)] == texts
    greedy = ort_chat.invoke(messages).content
    assert ort_chat.invoke(messages, temperature=None).content == greedy


def test_prompt_lookup_and_prefix_reuse_keep_the_greedy_output(tiny_onnx: Path) -> None:
    from ragcoder.chains.llm.onnx_decoder import OnnxDecoder
    from ragcoder.chains.llm.onnx_generate import OnnxGenerator
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_onnx)
    fresh = OnnxGenerator(OnnxDecoder(tiny_onnx), tokenizer, reuse_prefix=False)
    reusing = OnnxGenerator(OnnxDecoder(tiny_onnx), tokenizer)
    task = "def add(a, b):\n    " + "return a + b  # add them\n" * 6
    first, repair = task + "Fix the code above.", task + "Write it again, shorter."
    want = fresh.generate([first, repair], max_new_tokens=20)
    assert reusing.generate([first], max_new_tokens=20)[0].text == want[0].text
    again = reusing.generate([repair], max_new_tokens=20)[0]
    assert again.text == want[1].text and again.cached_tokens > 32  # the shared task was not read again
    looked_up = fresh.generate([repair], max_new_tokens=20, lookup=10)[0]
    assert looked_up.text == want[1].text


def test_a_prompt_read_in_chunks_gives_the_same_logits(ort_chat) -> None:
    decoder = ort_chat.generator.decoder
    ids = ort_chat.generator.encode("a prompt long enough to be read in several small pieces, one by one")
    whole, pieces = decoder.new_rows(1, 64), decoder.new_rows(1, 64)
    assert np.allclose(decoder.prefill(whole, 0, ids), decoder.prefill(pieces, 0, ids, chunk=3), atol=1e-5)
    assert int(whole.lengths[0]) == int(pieces.lengths[0]) == len(ids)


def test_async_invoke_matches_sync(ort_chat) -> None:
    import asyncio

    assert asyncio.run(ort_chat.ainvoke(PROMPTS[1])).content == ort_chat.invoke(PROMPTS[1]).content


# -- conversion: made once, recorded, checked, remade -------------------------------------------


@pytest.fixture
def tiny_known(model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tiny_source: Path) -> str:
    """An 'installed' known model whose HF folder is the tiny one (fp32 ONNX form, HF dropped)."""
    name = "tiny-engine-test"
    known = KnownModel(
        name=name,
        description="tiny",
        requirements=(),
        gguf_members=(),
        gguf_size=0,
        gguf_sha256="",
        onnx_precision="fp32",
        keep_hf=False,
    )
    monkeypatch.setitem(KNOWN_MODELS, name, known)
    folder = model_dir(name)
    shutil.copytree(tiny_source, folder / "hf")
    (folder / "installed.json").write_text(json.dumps({"name": name}))
    return name


def test_install_makes_the_onnx_form_records_it_and_remakes_it_when_damaged(tiny_known: str) -> None:
    from ragcoder.chains.llm.onnx_convert import ensure_onnx

    lines: list[str] = []
    manifest = ensure_onnx(tiny_known, keep_hf=True, say=lines.append)
    record = manifest["engines"]["ort"]
    folder = model_dir(tiny_known) / "ort-int4"
    assert record["size"] == sum(f["size"] for f in record["files"].values()) > 0
    assert len(record["files"]["model.onnx.data"]["sha256"]) == 64
    assert onnx_folder(tiny_known) == folder and choose_engine(tiny_known)[0] == "ort"
    assert json.loads((model_dir(tiny_known) / "installed.json").read_text())["engines"]["ort"] == record

    ensure_onnx(tiny_known, keep_hf=True, say=lines.append)  # intact: checked, not rebuilt
    assert lines[-1].startswith("ONNX form checked")

    data = folder / "model.onnx.data"
    damaged = bytearray(data.read_bytes())
    damaged[100] ^= 0xFF  # same size, other content: only the hash sees it
    data.write_bytes(bytes(damaged))
    ensure_onnx(tiny_known, keep_hf=True, say=lines.append)
    assert any("does not match" in line for line in lines)
    assert data.read_bytes() != bytes(damaged)

    (folder / "model.onnx").unlink()  # an interrupted copy: the folder no longer loads
    assert onnx_folder(tiny_known) is None and choose_engine(tiny_known)[0] == "torch"
    ensure_onnx(tiny_known, keep_hf=True, say=lines.append)
    assert onnx_folder(tiny_known) == folder


def test_the_hf_weights_are_dropped_where_the_gguf_is_kept(tiny_known: str) -> None:
    from ragcoder.chains.llm.onnx_convert import ensure_onnx

    folder = model_dir(tiny_known)
    (folder / "model.gguf").write_bytes(b"GGUF")  # stands in for the install's verified GGUF
    manifest = ensure_onnx(tiny_known)
    kept = sorted(p.name for p in (folder / "hf").iterdir())
    assert "model.safetensors" not in kept and {"config.json", "tokenizer.json"} <= set(kept)
    assert sorted(manifest["parts"]["hf"]["files"]) == kept
    resolved = resolve_model(tiny_known)  # config and tokenizer still load from hf/
    assert (resolved.kind, resolved.load_dir, resolved.gguf_file) == ("known", folder / "hf", None)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft 0.21, transformers 5
def test_a_lora_adapter_is_merged_converted_and_runs_on_the_onnx_engine(
    tiny_known: str, tiny_source: Path, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.chains.llm.engines import load_chat
    from ragcoder.chains.llm.onnx_convert import convert_adapter, ensure_onnx
    from transformers import AutoModelForCausalLM

    ensure_onnx(tiny_known, keep_hf=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_source)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)  # a trained adapter is not the zero update peft starts from
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)

    target = convert_adapter(tiny_known, adapter)
    assert onnx_folder(tiny_known, adapter) == target
    fast = load_chat(tiny_known, adapter=str(adapter), max_new_tokens=16)
    assert fast.engine == "ort"
    reference = load_chat_model(str(tiny_source), adapter=str(adapter), quantize="none", max_new_tokens=16)
    plain = load_chat(tiny_known, max_new_tokens=16)
    assert fast.invoke(PROMPTS[0]).content == reference.invoke(PROMPTS[0]).content
    assert fast.invoke(PROMPTS[0]).content != plain.invoke(PROMPTS[0]).content
    lines: list[str] = []
    assert convert_adapter(tiny_known, adapter, say=lines.append) == target
    assert lines == [f"adapter already converted: {target}"]


def test_models_list_shows_each_part_and_its_size(tiny_known: str) -> None:
    from ragcoder.chains.llm.onnx_convert import ensure_onnx

    from ragcoder.cli.commands.models_cmd import models

    ensure_onnx(tiny_known, keep_hf=True)
    result = CliRunner().invoke(models, ["list"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "ort-int4" in line)
    assert "hf " in line and " MB" in line


# -- the decode loop's parts, without a model ----------------------------------------------------


def test_prompt_lookup_candidates_follow_the_latest_match_of_the_longest_ngram() -> None:
    from ragcoder.chains.llm.onnx_generate import _lookup_candidates

    history = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert _lookup_candidates(history, 3) == [7, 8, 5]  # after the latest earlier "1 2 3"
    assert _lookup_candidates([4, 5, 6], 3) == []
    assert _lookup_candidates(history, 0) == []


def test_nucleus_sampling_keeps_the_top_p_mass_and_greedy_takes_the_maximum() -> None:
    from ragcoder.chains.llm.generate import Sampling
    from ragcoder.chains.llm.onnx_generate import _pick

    logits = np.log(np.array([[0.6, 0.3, 0.05, 0.05]]))
    assert _pick(logits, None, []).tolist() == [0]
    rng = np.random.default_rng(0)
    narrow = {int(_pick(logits, Sampling(1.0, top_p=0.5), [rng])[0]) for _ in range(50)}
    assert narrow == {0}  # 0.6 alone covers half the mass
    wide = {int(_pick(logits, Sampling(1.0, top_p=0.85), [rng])[0]) for _ in range(200)}
    assert wide == {0, 1}


def test_sampling_keeps_only_the_top_k_and_takes_the_nucleus_within_them() -> None:
    from ragcoder.chains.llm.generate import Sampling
    from ragcoder.chains.llm.onnx_generate import _pick

    logits = np.log(np.array([[0.3, 0.25, 0.2, 0.15, 0.1]]))
    rng = np.random.default_rng(0)
    two = {int(_pick(logits, Sampling(1.0, top_p=1.0, top_k=2), [rng])[0]) for _ in range(200)}
    assert two == {0, 1}  # the engines filter alike: the torch path applies transformers' top-k too
    # within the top 3 (0.3, 0.25, 0.2 of 0.75), 0.5 of the mass needs the first two, as in transformers
    nucleus = {int(_pick(logits, Sampling(1.0, top_p=0.5, top_k=3), [rng])[0]) for _ in range(200)}
    assert nucleus == {0, 1}
    every = {int(_pick(logits, Sampling(1.0, top_p=1.0, top_k=0), [rng])[0]) for _ in range(400)}
    assert every == {0, 1, 2, 3, 4}


def test_prefix_cache_leaves_the_last_token_to_compute_and_ignores_short_matches() -> None:
    from ragcoder.chains.llm.onnx_decoder import KVRows
    from ragcoder.chains.llm.onnx_generate import OnnxPrefixCache

    def rows(n: int) -> KVRows:
        return KVRows([np.zeros((1, 1, n, 2))], [np.zeros((1, 1, n, 2))], np.array([n]))

    cache = OnnxPrefixCache(min_tokens=4)
    cache.put(list(range(10)), rows(10))
    cache.put([0, 1, 2], rows(3))  # too short to keep
    entry, shared = cache.best(list(range(10)))
    assert entry is not None and shared == 9  # the same prompt: all but its last token
    assert cache.best([0, 1, 2, 3, 4, 99])[1] == 5
    assert cache.best([0, 1, 2, 99]) == (None, 0)
    assert len(cache.entries) == 1


def test_kv_rows_are_taken_and_cut_by_row() -> None:
    from ragcoder.chains.llm.onnx_decoder import KVRows

    keys = np.arange(3 * 1 * 5 * 2, dtype=np.float32).reshape(3, 1, 5, 2)
    kv = KVRows([keys], [keys + 100], np.array([2, 4, 3]))
    taken = kv.take([2, 0, 2])
    assert taken.lengths.tolist() == [3, 2, 3] and taken.capacity == 5
    assert np.array_equal(taken.keys[0][0, :, :3], keys[2, :, :3])
    assert not taken.keys[0][:, :, 3:].any()  # beyond the longest row taken: not copied
    prefix = kv.row_prefix(1, 3)
    assert prefix.keys[0].shape == (1, 1, 3, 2) and np.array_equal(prefix.values[0][0], keys[1, :, :3] + 100)


def test_the_embedding_table_is_stored_in_fp16_with_the_same_output(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper
    from ragcoder.chains.llm.onnx_decoder import OnnxDecoder
    from ragcoder.chains.llm.onnx_graph import halve_embedding

    halved = tmp_path / "halved"
    shutil.copytree(tiny_onnx, halved)
    assert halve_embedding(halved)
    saved = (tiny_onnx / "model.onnx.data").stat().st_size - (halved / "model.onnx.data").stat().st_size
    assert abs(saved - 49152 * 64 * 2) < 4096  # the table: fp32 -> fp16 (plus alignment)
    ids = list(range(100, 140))
    before, after = OnnxDecoder(tiny_onnx), OnnxDecoder(halved)
    logits = [d.prefill(d.new_rows(1, 48), 0, ids) for d in (before, after)]
    assert np.array_equal(logits[0], logits[1])  # bit for bit

    inexact = tmp_path / "inexact"  # a table with a value fp16 cannot hold stays fp32
    shutil.copytree(tiny_onnx, inexact)
    model = onnx.load(str(inexact / "model.onnx"))
    table = next(i for i in model.graph.initializer if i.name == "model.embed_tokens.weight")
    values = numpy_helper.to_array(table).copy()
    values[0, 0] = 1.0 + 2**-20
    table.CopyFrom(numpy_helper.from_array(values, table.name))
    onnx.save(model, str(inexact / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    assert not halve_embedding(inexact)


def test_prompts_of_one_batch_share_their_common_start(tiny_onnx: Path) -> None:
    from ragcoder.chains.llm.onnx_decoder import OnnxDecoder
    from ragcoder.chains.llm.onnx_generate import OnnxGenerator
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_onnx)
    reusing = OnnxGenerator(OnnxDecoder(tiny_onnx), tokenizer)
    fresh = OnnxGenerator(OnnxDecoder(tiny_onnx), tokenizer, reuse_prefix=False)
    scaffold = "You are a careful programmer. Complete the function below and return all of it.\n"
    prompts = [scaffold + f"def f{i}(x):\n    return x * {i}\n" for i in range(3)]
    outputs = reusing.generate(prompts, max_new_tokens=12)
    assert outputs[0].cached_tokens == 0 and all(o.cached_tokens >= 16 for o in outputs[1:])
    assert [o.text for o in outputs] == [o.text for o in fresh.generate(prompts, max_new_tokens=12)]
