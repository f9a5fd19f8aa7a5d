"""LoRA supervised fine-tuning, nanoGPT style: one script, defaults at the top, argparse overrides.

    python -m ragcoder.finetune.train --data verified.jsonl --out adapters/smol-verified
    python -m ragcoder.finetune.train --data a.jsonl --data b.jsonl --base qwen2.5-coder-1.5b-instruct --max-steps 200

Examples are chat-formatted with the agent's own codegen prompt (see ``ragcoder.finetune.sft_data``), and the
loss is on the response tokens only. Checkpoints (adapter + optimizer + step) go to
``OUT/checkpoint`` every ``save_every`` steps; rerunning the same command resumes from there. The
final adapter is written to ``OUT`` (loadable with ``load_chat_model(spec, adapter=OUT)``) with
``train_config.json`` beside it (resolved config, data hashes, timings). ``--merge`` also writes a
standalone model folder ``OUT/merged``. CPU works (slow but real); a GPU is used when present.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    base: str = "smollm2-135m-instruct"  # small enough to train on 2 CPU cores in minutes
    data: list[str] = field(default_factory=list)  # instruction -> code JSONL files (finetune data ...)
    out: str = "adapters/lora"  # the adapter folder; checkpoints in OUT/checkpoint
    lora_r: int = 16  # rank 16: enough capacity for a narrow skill, ~4% of a 135M model's params
    lora_alpha: int = 32  # alpha = 2r, the usual scaling
    lora_dropout: float = 0.05  # light regularisation: datasets here are hundreds of examples, not millions
    target_modules: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # all linears: best LoRA quality per QLoRA paper
    lora_layers: int = 0  # 0: every layer; N: only the top N, so backward stops there (cheaper steps)
    max_len: int = 768  # a HumanEval prompt + a 40-line function fit; longer examples are cut
    batch_size: int = 4  # 2 CPU cores: bigger batches do not raise tokens/s
    grad_accum: int = 2  # effective batch 8 for a steadier gradient on tiny data
    lr: float = 2e-4  # the usual LoRA learning rate (full fine-tuning would use ~1e-5)
    min_lr_ratio: float = 0.1  # cosine decays to 10% of lr
    warmup_steps: int = 10  # a few steps of warm-up keep the first updates from wrecking the model
    weight_decay: float = 0.0  # LoRA weights start at zero; decay only pulls them back
    epochs: float = 3.0  # small verified datasets: a few passes; stop early if the loss collapses
    max_steps: int = 0  # > 0 overrides epochs
    save_every: int = 50  # optimizer steps between checkpoints (resume loses at most this many)
    log_every: int = 1  # steps between progress-bar updates
    seed: int = 1337
    device: str = "auto"  # auto: cuda when present, else cpu
    merge: bool = False  # also write OUT/merged: base + adapter as one standalone model folder
    gradient_checkpointing: bool = False  # saves memory for 1.5B on small GPUs; slower
    memory_guard: bool = True  # estimate the peak first; turn on checkpointing / smaller batches to fit


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="ragcoder finetune train", description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "data":
            parser.add_argument(flag, action="append", default=None, help="JSONL file (repeat for more)")
        elif f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None)
    args = vars(parser.parse_args(argv))
    config = TrainConfig()
    for name, value in args.items():
        if value is not None:
            setattr(config, name, value)
    return config


def _device(wanted: str) -> str:
    import torch

    if wanted != "auto":
        return wanted
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(spec: str, device: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, folder) for a known name, HF folder or .gguf (dequantized to dense)."""
    from ragcoder.chains.llm.models import resolve_model
    from ragcoder.chains.llm.weights import dtype_for, load_dense_model, load_tokenizer

    resolved = resolve_model(spec)
    tokenizer = load_tokenizer(resolved.load_dir, resolved.gguf_file)
    model = load_dense_model(resolved.load_dir, gguf_file=resolved.gguf_file, dtype=dtype_for(device))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer, str(resolved.load_dir)


def build_dataset(config: TrainConfig, tokenizer: Any) -> tuple[list[dict[str, list[int]]], list[dict]]:
    from ragcoder.finetune.sft_data import encode, file_sha256, read_examples

    rows, sources = [], []
    for name in config.data:
        path = Path(name)
        examples = read_examples(path)
        encoded = [e for e in (encode(x, tokenizer, config.max_len) for x in examples) if e is not None]
        rows += encoded
        sources.append(
            {
                "path": str(path.resolve()),
                "sha256": file_sha256(path),
                "examples": len(examples),
                "used": len(encoded),
            }
        )
    if not rows:
        raise SystemExit("no usable training examples: pass --data FILE.jsonl (see `ragcoder finetune data`)")
    return rows, sources


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def train(config: TrainConfig) -> Path:
    import torch
    from peft import set_peft_model_state_dict
    from ragcoder.finetune.sft_data import collate
    from tqdm import tqdm

    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = _device(config.device)
    out = Path(config.out)
    checkpoint = out / "checkpoint"
    model, tokenizer, base_dir = load_base(config.base, device)
    rows, sources = build_dataset(config, tokenizer)
    tight = config.memory_guard and _fit_to_memory(
        config, model, device, longest=max(len(r["input_ids"]) for r in rows)
    )
    model = wrap_lora(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(len(rows) / (config.batch_size * config.grad_accum))
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))

    step, tokens_seen = 0, 0
    if (checkpoint / "state.pt").is_file():  # resume
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(checkpoint / "adapter_model.safetensors")))
        state = torch.load(checkpoint / "state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        step, tokens_seen = state["step"], state["tokens_seen"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resuming from {checkpoint} at step {step}/{total}")

    def batches():
        while True:
            order = list(range(len(rows)))
            random.shuffle(order)
            for i in range(0, len(order), config.batch_size):
                yield collate([rows[j] for j in order[i : i + config.batch_size]], tokenizer.pad_token_id)

    stream = batches()
    model.train()
    bar = tqdm(total=total, initial=step, desc="lora", unit="step", dynamic_ncols=True)
    window_tokens, window_start, loss_value = 0, time.perf_counter(), float("nan")
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, config)
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            batch = {k: v.to(device) for k, v in next(stream).items()}
            loss = response_loss(model, batch) / config.grad_accum
            loss.backward()
            loss_sum += loss.item()
            n = int(batch["attention_mask"].sum())
            window_tokens += n
            tokens_seen += n
            del loss, batch
            if tight and device == "cpu":  # the activations are gone: hand their pages back
                _trim_heap()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_value = loss_sum
        if step % config.log_every == 0 or step == total:
            rate = window_tokens / max(1e-9, time.perf_counter() - window_start)
            bar.set_postfix(
                loss=f"{loss_value:.4f}", tok_s=f"{rate:.0f}", lr=f"{lr_at(step, total, config):.1e}"
            )
            window_tokens, window_start = 0, time.perf_counter()
        bar.update(1)
        if step % config.save_every == 0 and step < total:
            _save_checkpoint(model, optimizer, checkpoint, step, tokens_seen)
    bar.close()

    model.save_pretrained(out)
    seconds = time.perf_counter() - started
    record = {
        "config": asdict(config),
        "base_dir": base_dir,
        "device": device,
        "data": sources,
        "examples": len(rows),
        "steps": step,
        "tokens_seen": tokens_seen,
        "final_loss": loss_value,
        "trainable_params": trainable,
        "train_seconds": round(seconds, 1),
        "versions": _versions(),
    }
    (out / "train_config.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    if config.merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged")
        tokenizer.save_pretrained(out / "merged")
    print(
        f"adapter: {out} ({len(rows)} examples, {step} steps, {seconds:.0f} s, final loss {loss_value:.4f})"
    )
    return out


def wrap_lora(model: Any, config: TrainConfig) -> Any:
    """The peft model: adapters on ``target_modules`` of the top ``lora_layers`` layers (all when 0),
    with gradient checkpointing when configured."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules.split(","),
        task_type="CAUSAL_LM",
        layers_to_transform=_top_layers(model, config.lora_layers),
    )
    with warnings.catch_warnings():  # peft 0.21 calls an alias transformers 5 deprecates
        warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, lora)
    if config.gradient_checkpointing:  # after peft, so that peft adds no input-grad hook of its own
        base = model.get_base_model()
        # transformers 5 renamed it; 4.x has only the old name
        enable = getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable
        enable({"use_reentrant": False})
        # Non-reentrant checkpointing gets the adapters their grads without making the embeddings
        # require grad; that hook would record a graph (and run backward) through the frozen layers
        # below the adapters, which is what --lora-layers saves.
        base.disable_input_require_grads()
    return model


def response_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the response tokens, the same number as ``model(**batch).loss``, but
    with logits computed only where a label is: the prompt's logits would be thrown away, and
    (tokens x vocab) is the largest tensor of a step (Qwen's vocabulary is 152k)."""
    import torch.nn.functional as F
    from ragcoder.finetune.sft_data import IGNORE_INDEX

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def _top_layers(model: Any, count: int) -> list[int] | None:
    """Indices of the top ``count`` decoder layers for peft's ``layers_to_transform``; None = all."""
    total = model.config.num_hidden_layers
    if count <= 0:
        return None
    if count > total:
        raise SystemExit(
            f"finetune: --lora-layers {count} is more than the model's {total} layers; "
            f"pass at most {total}, or 0 for all"
        )
    return list(range(total - count, total))


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc). Batches of different widths fragment the heap,
    and resident memory creeps up; trimming after every micro-batch lowers the peak but costs time
    (docs/results.md, "Fixed in session 6"), so it runs only when memory is tight (the memory
    guard had to shrink the run)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        return None


def _fit_to_memory(config: TrainConfig, model: Any, device: str, *, longest: int) -> bool:
    """Change batch/accumulation/checkpointing in ``config`` so one step fits (ragcoder.finetune.memory);
    True when anything had to change (memory is tight)."""
    from ragcoder.finetune.memory import available_bytes, lora_params, model_shape, plan_memory

    targets = config.target_modules.split(",")
    layers = _top_layers(model, config.lora_layers)
    params = sum(p.numel() for p in model.parameters())
    dtype_bytes = next(model.parameters()).element_size()
    plan = plan_memory(
        model_shape(model),
        params=params,
        resident=params * dtype_bytes,  # loaded: free memory excludes it
        trainable=lora_params(model, targets, config.lora_r, layers),
        dtype_bytes=dtype_bytes,
        longest=min(longest, config.max_len),
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
        checkpointing=config.gradient_checkpointing,
        available=available_bytes(device),
        base=config.base,
        graph_layers=config.lora_layers or None,
    )
    if plan.note:
        print(plan.note)
    config.batch_size, config.grad_accum = plan.batch_size, plan.grad_accum
    config.gradient_checkpointing = plan.gradient_checkpointing
    return bool(plan.note)


def _save_checkpoint(model: Any, optimizer: Any, folder: Path, step: int, tokens_seen: int) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    state = {
        "optimizer": optimizer.state_dict(),
        "step": step,
        "tokens_seen": tokens_seen,
        "python_rng": random.getstate(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = folder / "state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(folder / "state.pt")  # atomic: a kill mid-save keeps the previous checkpoint


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
