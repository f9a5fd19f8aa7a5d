"""The local chat model on a tiny random llama: invoke, stream, batch, stops, usage, caching."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from ragcoder.chains.llm.chat_model import LocalChatModel, load_chat_model, load_model_weights, repair_model
from ragcoder.chains.llm.generate import _cut_at_stop, _stop_prefix_len

from ragcoder.errors import ModelNotInstalled, UnknownModel

PROMPTS = ["hello there", "write a long python function that sorts a list of numbers", "hi"]


def _joined(chunks: list) -> AIMessage:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def test_invoke_returns_only_new_text_with_token_usage(model_tiny_chat: LocalChatModel) -> None:
    answer = model_tiny_chat.invoke([SystemMessage("be brief"), HumanMessage("hello there")])
    assert isinstance(answer, AIMessage) and answer.content.strip()
    assert "hello there" not in answer.content  # the prompt is not echoed
    usage = answer.usage_metadata
    assert usage["input_tokens"] > 5 and 0 < usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert answer.response_metadata["finish_reason"] in ("stop", "length")


def test_greedy_output_is_deterministic(model_tiny_chat: LocalChatModel) -> None:
    assert model_tiny_chat.invoke("hello there").content == model_tiny_chat.invoke("hello there").content


def test_same_arguments_share_one_model_and_weights_are_shared(model_tiny_dir: Path) -> None:
    first = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=24)
    assert load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=24) is first
    longer = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=48)
    assert longer is not first and longer.llm.pipeline.model is first.llm.pipeline.model


def test_stream_yields_pieces_that_add_up_to_invoke_and_ends_with_usage(
    model_tiny_chat: LocalChatModel,
) -> None:
    expected = model_tiny_chat.invoke("hello there")
    chunks = list(model_tiny_chat.stream("hello there"))
    assert len(chunks) > 2
    total = _joined(chunks)
    assert total.content == expected.content
    assert total.usage_metadata == expected.usage_metadata


def test_batch_equals_one_by_one_despite_left_padding(model_tiny_chat: LocalChatModel) -> None:
    one_by_one = [model_tiny_chat.invoke(p) for p in PROMPTS]
    batched = model_tiny_chat.batch(PROMPTS)
    assert [m.content for m in batched] == [m.content for m in one_by_one]
    assert [m.usage_metadata for m in batched] == [m.usage_metadata for m in one_by_one]


def test_stop_sequence_cuts_invoke_stream_and_batch(model_tiny_chat: LocalChatModel) -> None:
    full = model_tiny_chat.invoke("hello there").content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.index(stop)]
    cut = model_tiny_chat.invoke("hello there", stop=[stop])
    assert cut.content == expected and cut.response_metadata["finish_reason"] == "stop"
    assert (
        cut.usage_metadata["output_tokens"]
        < model_tiny_chat.invoke("hello there").usage_metadata["output_tokens"]
    )
    assert _joined(list(model_tiny_chat.stream("hello there", stop=[stop]))).content == expected
    assert model_tiny_chat.batch(["hello there", "hi"], stop=[stop])[0].content == expected


def test_prompt_lookup_keeps_greedy_output(model_tiny_chat: LocalChatModel) -> None:
    plain = model_tiny_chat.invoke(PROMPTS[1]).content
    assert model_tiny_chat.bind(prompt_lookup=True).invoke(PROMPTS[1]).content == plain
    assert repair_model(model_tiny_chat).invoke(PROMPTS[1]).content == plain
    assert [m.content for m in model_tiny_chat.batch(PROMPTS[:2], prompt_lookup=True)][1] == plain
    assert _joined(list(model_tiny_chat.stream(PROMPTS[1], prompt_lookup=True))).content == plain


def test_a_sampled_row_draws_the_same_tokens_in_any_batch(
    model_tiny_chat: LocalChatModel, model_tiny_dir: Path
) -> None:
    # row i of a call seeded s samples as a call of its own seeded s + i: n copies of one prompt
    # are n different samples, and a split batch or a lone request draws the same rows
    prompt = PROMPTS[1]
    rows = [m.content for m in model_tiny_chat.batch([prompt] * 4, temperature=1.5, seed=20)]
    assert len(set(rows)) == 4
    assert [model_tiny_chat.invoke(prompt, temperature=1.5, seed=20 + i).content for i in range(4)] == rows
    mixed = model_tiny_chat.batch([PROMPTS[0], prompt, PROMPTS[2], prompt], temperature=1.5, seed=19)
    assert [mixed[1].content, mixed[3].content] == [rows[0], rows[2]]  # other company, same draws
    split = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=24, batch_size=3)
    assert [m.content for m in split.batch([prompt] * 4, temperature=1.5, seed=20)] == rows


def test_temperature_samples_reproducibly_with_a_seed_on_every_path(model_tiny_chat: LocalChatModel) -> None:
    prompt = PROMPTS[1]
    greedy = model_tiny_chat.invoke(prompt).content
    sampled = [model_tiny_chat.invoke(prompt, temperature=1.5, seed=s).content for s in range(4)]
    assert model_tiny_chat.invoke(prompt, temperature=1.5, seed=0).content == sampled[0]  # seeded
    assert any(text != greedy for text in sampled) and len(set(sampled)) > 1  # a random model varies
    # the repair model (prompt lookup), batches and streams sample too
    assert {
        repair_model(model_tiny_chat).invoke(prompt, temperature=1.5, seed=s).content for s in range(4)
    } != {greedy}
    assert {m.content for m in model_tiny_chat.batch([prompt, prompt], temperature=1.5, seed=1)} != {greedy}
    assert _joined(list(model_tiny_chat.stream(prompt, temperature=1.5, seed=0))).content == sampled[0]
    assert model_tiny_chat.invoke(prompt, temperature=0).content == greedy  # 0 means greedy
    with pytest.raises(ValueError, match="temperature must be > 0"):
        from ragcoder.chains.llm.generate import Sampling

        Sampling(temperature=-1.0)


def test_async_invoke_and_stream_match_sync(model_tiny_chat: LocalChatModel) -> None:
    import asyncio

    async def run() -> tuple[AIMessage, list]:
        answer = await model_tiny_chat.ainvoke("hello there")
        return answer, [chunk async for chunk in model_tiny_chat.astream("hello there")]

    answer, chunks = asyncio.run(run())
    expected = model_tiny_chat.invoke("hello there")
    assert answer.content == expected.content == _joined(chunks).content
    assert answer.usage_metadata == expected.usage_metadata


def test_max_new_tokens_per_call(model_tiny_chat: LocalChatModel) -> None:
    short = model_tiny_chat.invoke("hello there", max_new_tokens=3)
    assert short.usage_metadata["output_tokens"] <= 3


def test_int8_quantized_load_works_under_warnings_as_errors(model_tiny_dir: Path) -> None:
    loaded = load_model_weights(str(model_tiny_dir), quantize="int8", device="cpu")
    assert loaded.description == "int8-dynamic cpu"
    chat = load_chat_model(str(model_tiny_dir), quantize="int8", max_new_tokens=8)
    assert chat.invoke("hello there").usage_metadata["output_tokens"] > 0


@pytest.mark.filterwarnings("ignore:.*torch.ao.quantization.*:DeprecationWarning")  # the stock one, compared
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated:UserWarning")  # saving quantized tensors
def test_int8_rows_are_quantized_on_their_own_scale_so_batches_do_not_change_results() -> None:
    import io

    import torch
    from ragcoder.chains.llm.int8 import quantize_int8

    torch.manual_seed(0)
    layers = torch.nn.Sequential(
        torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32, bias=False)
    )
    rows = torch.randn(5, 7, 64) * torch.tensor([0.1, 1.0, 3.0, 10.0, 30.0]).view(
        5, 1, 1
    )  # one outlier prompt
    exact = layers(rows)
    stock = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(layers), {torch.nn.Linear}, dtype=torch.qint8
    )
    alone = torch.cat([stock(rows[i : i + 1]) for i in range(5)])
    assert not torch.equal(stock(rows), alone)  # torch's own: one activation scale for the whole batch

    quantized = quantize_int8(copy.deepcopy(layers))
    assert "RowwiseInt8Linear" in repr(quantized)
    batched = quantized(rows)
    assert torch.equal(batched, torch.cat([quantized(rows[i : i + 1]) for i in range(5)]))
    for i in range(5):  # every prompt, the small ones too, stays close to fp32
        assert (batched[i] - exact[i]).norm() / exact[i].norm() < 0.03
    buffer = io.BytesIO()  # the on-disk cache pickles the whole model
    torch.save(quantized, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(rows), batched)


def test_int8_weights_get_one_scale_per_output_channel() -> None:
    """Weight rows of very different size (as in real checkpoints): one scale per matrix rounds the
    small rows to a few levels; one scale per output row keeps each of them close to fp32."""
    import torch
    from ragcoder.chains.llm.int8 import quantize_int8

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    with torch.no_grad():
        layer.weight.mul_(torch.logspace(-2, 0, 48).view(48, 1))  # rows 100x apart
    x = torch.randn(6, 64)
    exact = layer(x)

    def error(per_channel: bool) -> float:
        quantized = quantize_int8(torch.nn.Sequential(copy.deepcopy(layer)), per_channel=per_channel)
        packed = quantized[0]._packed_params._weight_bias()[0]
        assert packed.qscheme() == (torch.per_channel_affine if per_channel else torch.per_tensor_affine)
        got = quantized(x)
        return ((got - exact)[:, :24].norm() / exact[:, :24].norm()).item()  # the small rows

    assert error(per_channel=True) < 0.02 < error(per_channel=False)


def test_int8_model_of_an_installed_model_is_cached_on_disk(
    model_tiny_dir: Path, model_cache_dir: Path
) -> None:
    import json
    import shutil

    from ragcoder.chains.llm.chat_model import clear_model_cache
    from ragcoder.chains.llm.models import model_dir

    name = "smollm2-135m-instruct"
    shutil.copytree(model_tiny_dir, model_dir(name) / "hf")
    (model_dir(name) / "installed.json").write_text(json.dumps({"name": name}))
    try:
        first = load_model_weights(name, quantize="int8", device="cpu")
        answer = load_chat_model(name, max_new_tokens=8).invoke("hello there").content
        assert first.description == "int8-dynamic cpu" and len(list(model_dir(name).glob("int8*.pt"))) == 1
        clear_model_cache()
        second = load_model_weights(name, quantize="int8", device="cpu")
        assert second.description == "int8-dynamic cpu (cached)" and second.quantize_s == 0.0
        assert load_chat_model(name, max_new_tokens=8).invoke("hello there").content == answer
    finally:
        clear_model_cache()


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft 0.21, transformers 5
def test_lora_adapter_is_merged_on_load(
    model_tiny_dir: Path, model_tiny_chat: LocalChatModel, tmp_path: Path
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_tiny_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    tuned = load_chat_model(
        str(model_tiny_dir), adapter=tmp_path / "adapter", quantize="none", max_new_tokens=24
    )
    assert tuned is not model_tiny_chat
    assert tuned.invoke(PROMPTS[1]).content != model_tiny_chat.invoke(PROMPTS[1]).content


def test_bad_specs_and_options_fail_with_our_errors(model_tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownModel):
        load_chat_model("no-such-model")
    with pytest.raises(ModelNotInstalled, match=r"adapter_config\.json"):
        load_chat_model(str(model_tiny_dir), adapter=tmp_path)
    with pytest.raises(ValueError, match="quantize"):
        load_chat_model(str(model_tiny_dir), quantize="int4")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("abc```def", ["```"], ("abc", True)),
        ("abc", ["x"], ("abc", False)),
        ("a.b;c", [";", "."], ("a", True)),
    ],
)
def test_cut_at_stop(text: str, stop: list[str], expected: tuple[str, bool]) -> None:
    assert _cut_at_stop(text, stop) == expected


def test_stop_prefix_is_held_back() -> None:
    assert _stop_prefix_len("code ``", ["```"]) == 2
    assert _stop_prefix_len("code", ["```"]) == 0


def test_degenerate_loops_are_recognised_and_ordinary_code_is_not() -> None:
    from ragcoder.chains.llm.generate import degenerate

    chain = "def f(base):\n" + "".join(
        f"    if base == {n}:\n        return str(n)\n" for n in range(100, 120)
    )
    prints = "".join(f'print(encode("Python {i}"))  # Output: "x"\n' for i in range(34))
    assert degenerate(chain) and degenerate(prints) and degenerate("You are a function. " * 5)
    table = "".join(
        f"    ({v}, '{s}'),\n" for v, s in [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD")] * 3
    )
    roman = f"def to_roman(n):\n    table = [\n{table}    ]\n    return table\n"
    assert not degenerate(roman) and not degenerate("x = 10000\ny = '----'\n" + " " * 200)
    for module in (
        "chains/retrieval/retriever.py",
        "sandbox/server/main.py",
        "agent/loop.py",
    ):  # real code, read whole
        text = (Path(__file__).resolve().parents[2] / module).read_text()
        assert not degenerate(text), module


def test_a_looping_row_is_stopped_early_and_says_so(model_tiny_dir: Path) -> None:
    from ragcoder.chains.llm.chat_model import load_model_weights
    from ragcoder.chains.llm.generate import generate_batch

    weights = load_model_weights(str(model_tiny_dir), quantize="none")
    tokenizer = weights.tokenizer
    prompt = "hello " * 40  # the tiny random model falls into a loop at once
    (looping,) = generate_batch(weights.model, tokenizer, [prompt], stop=[], max_new_tokens=120)
    assert looping.finish_reason == "repetition" and looping.output_tokens < 120
    assert degenerate_text(looping.text)


def degenerate_text(text: str) -> bool:
    from ragcoder.chains.llm.generate import degenerate

    return degenerate(text)


# -- reuse of a shared prompt prefix (chains/llm/prefix_cache.py) ----------------------------------

TASK = "Task:\nwrite a python function that sorts a list of numbers, and one that reverses a string.\n"
FIRST_ATTEMPT = [SystemMessage("You write Python."), HumanMessage(TASK + "Write the complete program.")]
REPAIR = [
    SystemMessage("You write Python."),
    HumanMessage(
        TASK + "This code was run and failed:\n```python\ndef sort(xs):\n    return xs\n```\nFix it."
    ),
]


def _cold(chat: LocalChatModel, messages: list, **kwargs) -> AIMessage:
    """The answer with no stored prefix to start from."""
    from ragcoder.chains.llm.prefix_cache import prefix_cache_for

    prefix_cache_for(chat.llm.pipeline.model).clear()
    return chat.invoke(messages, **kwargs)


@pytest.mark.parametrize("lookup", [None, True], ids=["plain", "prompt-lookup"])
def test_a_repair_starts_from_its_first_attempts_prefix_and_answers_the_same(
    model_tiny_chat: LocalChatModel, lookup: bool | None
) -> None:
    expected = _cold(model_tiny_chat, REPAIR, prompt_lookup=lookup)
    assert "input_token_details" not in expected.usage_metadata  # nothing was reused
    _cold(model_tiny_chat, FIRST_ATTEMPT)
    reused = model_tiny_chat.invoke(REPAIR, prompt_lookup=lookup)
    shared = reused.usage_metadata["input_token_details"]["cache_read"]
    assert 32 <= shared < reused.usage_metadata["input_tokens"]
    assert reused.content == expected.content
    assert reused.usage_metadata["output_tokens"] == expected.usage_metadata["output_tokens"]
    _cold(model_tiny_chat, FIRST_ATTEMPT)  # the stream path reuses too
    streamed = _joined(list(model_tiny_chat.stream(REPAIR, prompt_lookup=lookup)))
    assert streamed.content == expected.content
    assert streamed.usage_metadata["input_token_details"]["cache_read"] == shared


def test_a_batch_leaves_each_rows_prompt_for_its_repair(model_tiny_chat: LocalChatModel) -> None:
    expected = _cold(model_tiny_chat, REPAIR)
    # the first attempt is the shorter, left-padded row of a batch
    model_tiny_chat.batch([FIRST_ATTEMPT, [HumanMessage(PROMPTS[1] * 6)]])
    reused = model_tiny_chat.invoke(REPAIR)
    assert reused.usage_metadata["input_token_details"]["cache_read"] >= 32
    assert reused.content == expected.content


def test_turning_prefix_reuse_off_reads_every_prompt_token(model_tiny_dir: Path) -> None:
    chat = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=8, batch_size=1)
    chat.invoke(FIRST_ATTEMPT)
    chat.llm.reuse_prefix = False
    try:
        assert "input_token_details" not in chat.invoke(REPAIR).usage_metadata
    finally:
        chat.llm.reuse_prefix = True


def test_prefix_cache_picks_the_longest_match_and_keeps_the_last_token_to_compute() -> None:
    import torch
    from ragcoder.chains.llm.prefix_cache import PrefixCache
    from transformers import DynamicCache

    def cache_of(n: int) -> DynamicCache:
        cache = DynamicCache()
        cache.update(torch.arange(n, dtype=torch.float).view(1, 1, n, 1), torch.zeros(1, 1, n, 1), 0)
        return cache

    store = PrefixCache(max_entries=2, min_tokens=4)
    store.put(list(range(10)), cache_of(10))
    store.put(list(range(6)) + [99] * 4, cache_of(10))
    assert store.take([7] * 10) == (None, 0)  # nothing shared
    cache, shared = store.take([*range(8), 50])
    assert shared == 8 and cache.get_seq_length() == 8
    assert cache.layers[0].keys.flatten().tolist() == list(range(8))
    assert len(store.entries) == 1  # handed out: generate extends it in place
    cache, shared = store.take(list(range(6)) + [99] * 4)  # the whole prompt matches: one token left
    assert shared == 9 and cache.get_seq_length() == 9
    store.put(list(range(3)), cache_of(3))  # below min_tokens: not kept
    for n in range(3):
        store.put(list(range(10 + n)), cache_of(10 + n))
    assert [len(e.ids) for e in store.entries] == [11, 12]  # the oldest went first
    store.put(list(range(5)), cache_of(4))  # a cache that does not cover its ids is refused
    assert len(store.entries) == 2


def test_the_assisted_decoding_fix_lasts_one_call_and_restores_the_method() -> None:
    from ragcoder.chains.llm.prefix_cache import assisted_from_prefix

    class Model:
        def prepare_inputs_for_generation(self, input_ids, next_sequence_length=None, **kwargs):
            return input_ids[-next_sequence_length:] if next_sequence_length else input_ids

    class Filled:
        def get_seq_length(self) -> int:
            return 3

    class Ids(list):
        shape = (1, 5)

    model = Model()
    with assisted_from_prefix(model, Filled()):
        assert model.prepare_inputs_for_generation(Ids(range(5)), is_first_iteration=True) == [3, 4]
        assert model.prepare_inputs_for_generation(Ids(range(5)), next_sequence_length=1) == [4]
    assert "prepare_inputs_for_generation" not in vars(model)  # the class's method again

    def wrapped(input_ids, next_sequence_length=None, **kwargs):
        return "wrapped"

    model.prepare_inputs_for_generation = wrapped  # set on the instance, as some wrappers do
    with assisted_from_prefix(model, Filled()):
        assert model.prepare_inputs_for_generation(Ids(range(5)), is_first_iteration=True) == "wrapped"
    assert model.prepare_inputs_for_generation is wrapped
