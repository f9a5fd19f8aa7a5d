"""LoRA training on a tiny random model (a real peft run, a few steps) and the data sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragcoder.finetune.data import harvest_traces, mine_docstring_pairs, normalise_pairs, write_examples
from ragcoder.finetune.humaneval import load_problems
from ragcoder.finetune.sft_data import IGNORE_INDEX, DataError, Example, encode, read_examples

MINED_SOURCE = '''
def clamp(value, low, high):
    """Return value limited to the closed range [low, high] (low must not exceed high)."""
    if low > high:
        raise ValueError("low > high")
    return max(low, min(high, value))


def _private(x):
    """A private helper that is long enough to be mined but starts with an underscore."""
    y = x + 1
    z = y * 2
    return z


def stub(x):
    """This docstring is long enough but the body is too short to teach anything."""
    return x
'''


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from ragcoder.chains.llm.chat_model import make_tiny_random_model

    return make_tiny_random_model(tmp_path_factory.mktemp("tiny"))


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_user_pairs_are_validated_and_normalised(tmp_path: Path):
    src = _write(
        tmp_path / "in.jsonl",
        [
            {"prompt": "Add two numbers.", "completion": "```python\ndef add(a, b):\n    return a + b\n```"},
            {
                "messages": [
                    {"role": "user", "content": "Negate x."},
                    {"role": "assistant", "content": "def neg(x):\n    return -x"},
                ]
            },
            {"instruction": "Broken.", "response": "def f(:\n"},
            {"instruction": "No answer."},
        ],
    )
    items = list(normalise_pairs(src))
    rows = [i for i in items if isinstance(i, dict)]
    errors = [i for i in items if isinstance(i, DataError)]
    assert [r["instruction"] for r in rows] == ["Add two numbers.", "Negate x."]
    assert rows[0]["response"] == "def add(a, b):\n    return a + b\n"  # fence removed
    assert len(errors) == 2 and "not valid Python" in str(errors[0]) and ":4:" in str(errors[1])


def test_miner_filters_and_writer_dedupes(tmp_path: Path):
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text(MINED_SOURCE)
    (tmp_path / "pkg" / "copy.py").write_text(MINED_SOURCE)  # the same function twice: one kept
    rows = list(mine_docstring_pairs([tmp_path / "pkg"]))
    assert {r["response"].split("(")[0] for r in rows} == {"def clamp"}
    assert rows[0]["instruction"].startswith("Write a Python function `clamp(value, low, high)`")
    stats = write_examples(rows, tmp_path / "mined.jsonl")
    assert stats.written == 1 and stats.skipped == {"duplicate": 1}


def test_writer_drops_anything_from_the_test_split(tmp_path: Path):
    test_problem = load_problems("test")[0]
    dev_problem = load_problems("dev")[0]
    rows = [
        {"instruction": test_problem.prompt, "response": test_problem.canonical_code, "task_id": "x"},
        {"instruction": "anything", "response": "def f():\n    return 1\n", "task_id": test_problem.task_id},
        {
            "instruction": dev_problem.prompt,
            "response": dev_problem.canonical_code,
            "task_id": dev_problem.task_id,
        },
    ]
    stats = write_examples(rows, tmp_path / "out.jsonl")
    assert stats.written == 1 and stats.skipped == {"HumanEval test split": 2}


def test_traces_keep_only_verified_code(tmp_path: Path):
    results = _write(
        tmp_path / "results.jsonl",
        [
            {
                "id": "a",
                "instruction": "do a",
                "code": "def a():\n    return 1\n",
                "passed": True,
                "check": "tests",
                "attempts": [
                    {"code": "def a(): return 0", "feedback": "AssertionError: 0 != 1"},
                    {"code": "..."},
                ],
            },
            {
                "id": "b",
                "instruction": "do b",
                "code": "print(1)",
                "passed": True,
                "check": "runs",
                "attempts": [{}],
            },
            {
                "id": "c",
                "instruction": "do c",
                "code": "x",
                "passed": False,
                "check": "tests",
                "attempts": [{}],
            },
            {
                "id": "HumanEval/90",
                "task_id": "HumanEval/90",
                "instruction": "t",
                "code": "def t():\n    pass\n",
                "passed": True,
                "visible_passed": True,
                "attempts": [{}],
            },
        ],
    )
    rows = list(harvest_traces([results], repairs=True))
    assert [r["source"].split(":")[-1] for r in rows] == ["repaired", "repair-pair", "first-try"]
    assert "AssertionError" in rows[1]["instruction"]
    stats = write_examples(rows, tmp_path / "traces.jsonl")
    assert stats.written == 1  # the repair pair has the same code as its trace; HumanEval/90 is test split
    assert stats.skipped == {"duplicate": 1, "HumanEval test split": 1}


def test_one_solution_per_task_keeps_the_repaired_one(tmp_path: Path):
    from ragcoder.finetune.data import repaired_first, task_ids_in

    def row(task: str, code: str, kind: str) -> dict:
        return {
            "instruction": f"do {task}",
            "response": code,
            "source": f"trace:r.jsonl:{kind}",
            "task_id": task,
        }

    rows = [
        row("HumanEval/1", "def f():\n    return 1\n", "first-try"),
        row("HumanEval/1", "def f():\n    return 2\n", "repaired"),
        row("HumanEval/1", "def f():\n    return 1\n", "first-try"),  # same code again
        row("HumanEval/2", "def g():\n    return 3\n", "first-try"),
    ]
    out = tmp_path / "one.jsonl"
    stats = write_examples(iter(repaired_first(rows)), out, per_task=1)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["task_id"], r["source"].split(":")[-1]) for r in kept] == [
        ("HumanEval/1", "repaired"),
        ("HumanEval/2", "first-try"),
    ]
    assert stats.skipped == {"over 1 per task": 2}
    assert task_ids_in(out) == {"HumanEval/1", "HumanEval/2"}


def test_encode_masks_the_prompt(tiny_model: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    item = encode(Example("Write add(a, b).", "def add(a, b):\n    return a + b"), tokenizer, 512)
    assert item is not None
    labelled = [t for t, lab in zip(item["input_ids"], item["labels"], strict=True) if lab != IGNORE_INDEX]
    assert "return a + b" in tokenizer.decode(labelled)
    assert "Write add" not in tokenizer.decode(labelled)
    assert item["labels"][0] == IGNORE_INDEX
    assert encode(Example("x " * 600, "y"), tokenizer, 64) is None  # prompt alone too long


def _small_run(base: Path, data: Path, out: Path) -> list[str]:
    """Training flags for a few fast steps of a tiny model: batch 2, no accumulation, LoRA rank 4."""
    flags = "--batch-size 2 --grad-accum 1 --max-len 256 --lora-r 4"
    return ["--base", str(base), "--data", str(data), "--out", str(out), *flags.split()]


def test_tiny_lora_run_resumes_and_loads(tmp_path: Path, tiny_model: Path):
    from ragcoder.chains.llm.chat_model import load_chat_model
    from ragcoder.finetune.train import main

    data = _write(
        tmp_path / "train.jsonl",
        [
            {"instruction": f"Return {i} plus one.", "response": f"def f():\n    return {i + 1}\n"}
            for i in range(6)
        ],
    )
    out = tmp_path / "adapter"
    args = [
        *_small_run(tiny_model, data, out),
        "--save-every",
        "2",
        "--device",
        "cpu",
    ]
    main([*args, "--max-steps", "2", "--no-merge"])
    assert (out / "adapter_config.json").is_file()
    main([*args, "--max-steps", "4", "--merge"])  # resumes from the step-2 checkpoint
    record = json.loads((out / "train_config.json").read_text())
    assert record["steps"] == 4 and record["examples"] == 6
    assert record["data"][0]["sha256"] and record["config"]["lora_r"] == 4
    assert (out / "merged" / "config.json").is_file()
    chat = load_chat_model(str(tiny_model), adapter=str(out), max_new_tokens=5, quantize="none")
    reply = chat.invoke("hi")
    assert reply.usage_metadata["output_tokens"] >= 1
    # the merged folder is a standalone model
    merged = load_chat_model(str(out / "merged"), max_new_tokens=5, quantize="none")
    assert merged.invoke("hi").usage_metadata["input_tokens"] > 0


def test_response_loss_is_the_models_own_loss(tiny_model: Path):
    import torch
    from ragcoder.finetune.sft_data import collate
    from ragcoder.finetune.train import response_loss
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    rows = [
        encode(Example(f"Write f{i}.", "def f():\n    return " + "1 + " * i + "1\n"), tokenizer, 256)
        for i in range(3)
    ]
    batch = collate([r for r in rows if r is not None], tokenizer.pad_token_id or 0)
    with torch.no_grad():
        assert float(response_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)


def test_lora_layers_adapt_only_the_top_layers_and_train_them(tmp_path: Path, tiny_model: Path):
    import torch
    from ragcoder.finetune.train import TrainConfig, main, wrap_lora
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    # Below the adapters nothing records a graph, even with checkpointing (whose input-grad hook
    # would otherwise run backward through every frozen layer): that is the saving.
    model = wrap_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        TrainConfig(lora_layers=1, gradient_checkpointing=True, lora_r=4),
    )
    model.train()
    hidden = model(input_ids=torch.tensor([[1, 2, 3]]), output_hidden_states=True).hidden_states
    assert not hidden[0].requires_grad and not hidden[1].requires_grad and hidden[2].requires_grad

    data = _write(
        tmp_path / "train.jsonl",
        [{"instruction": f"Return {i}.", "response": f"def f():\n    return {i}\n"} for i in range(4)],
    )
    out = tmp_path / "top"
    main(
        [
            *_small_run(tiny_model, data, out),
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--lora-layers",
            "1",
            "--gradient-checkpointing",
            "--warmup-steps",
            "1",
        ]
    )
    assert json.loads((out / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all(".layers.1." in name for name in weights)
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(float(w.abs().sum()) > 0 for w in lora_b)  # B starts at zero: grads reached it
    with pytest.raises(SystemExit, match="--lora-layers 5 is more than"):
        main(
            [
                "--base",
                str(tiny_model),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "x"),
                "--device",
                "cpu",
                "--max-steps",
                "1",
                "--lora-layers",
                "5",
            ]
        )


def test_read_examples_rejects_bad_lines(tmp_path: Path):
    bad = _write(tmp_path / "bad.jsonl", [{"instruction": "x"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        read_examples(bad)


def test_dev_references_are_verified_and_dev_only(trusted_sandbox):
    from ragcoder.finetune.data import verified_dev_references

    rows = list(verified_dev_references(trusted_sandbox))
    assert len(rows) == 82  # every dev reference passes its own tests
    assert all(r["task_id"] in {p.task_id for p in load_problems("dev")} for r in rows)
    assert rows[0]["instruction"].startswith("Complete this Python function")
    skip = {"HumanEval/0", "HumanEval/5"}
    filled = list(verified_dev_references(trusted_sandbox, skip=skip))  # tasks the traces cover
    assert len(filled) == 80 and not skip & {r["task_id"] for r in filled}
