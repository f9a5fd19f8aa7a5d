"""Generation engines side by side, each in its own process, same prompts, one run.

    flock /tmp/ragcoder-heavy.lock python bench/engine_bench.py

For each engine (``--engines``): load time, prefill and decode tokens/s on one prompt (greedy,
``--new-tokens``), peak RSS and disk; for the batching engines also 8 prompts as one batch
against the same 8 one at a time, and 8 samples of one prompt (one prefill, one batched decode)
against 8 separate generations. Then the first token of ``ort-int4`` (the ``--ort-dir`` form): from
a fresh process that loads the model itself (cold), and from a fresh client of a running
``ragcoder serve --engine ort`` (served).

Engines: ``torch-int8`` (the project's transformers + int8 path), ``ort-int4`` (the ort engine:
ONNX Runtime, int4, :mod:`ragcoder.chains.llm.onnx_generate`), ``ortgenai-int4`` (the same files
through onnxruntime-genai's own generator loop, a reference for ours) and ``ct2-int8``
(CTranslate2, from ``--ct2-dir``, made with ``ct2-transformers-converter --quantization int8``);
``--variant NAME=FOLDER`` adds another ONNX form as ``ort-NAME``; ``--llamacpp-python PY`` adds
``llamacpp-gguf`` (llama.cpp on the installed GGUF, run by ``bench/llamacpp_worker.py`` under PY).
The last lines are the issue's three ratios (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DECODE_PROMPT = (
    "Write a Python class implementing a binary search tree with insert, delete, search and an "
    "in-order traversal. Give every method a docstring."
)
BATCH_PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case and spaces.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that counts the words in a text and returns the 3 most common.",
    "Write a Python function that flattens a nested list of integers.",
    "Write a Python function that converts a Roman numeral to an integer.",
    "Write a Python function that returns all prime numbers below n with a sieve.",
    "Write a Python function that parses 'key=value;key2=value2' into a dict.",
]
COLD_PROMPT = "Write a Python function add(a, b) that returns the sum."


def _dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


# -- workers (one engine per process) -----------------------------------------------------------


def _chat_model(engine: str, args: argparse.Namespace) -> tuple[Any, int]:
    """The engine's LangChain chat model and the bytes of weights it reads from disk."""
    if engine == "torch-int8":
        from ragcoder.chains.llm.chat_model import load_chat_model
        from ragcoder.chains.llm.int8 import int8_cache_file
        from ragcoder.chains.llm.models import resolve_model

        chat = load_chat_model(args.model, quantize="int8", max_new_tokens=args.new_tokens)
        resolved = resolve_model(args.model)
        cache = int8_cache_file(resolved, None)
        source = resolved.load_dir / resolved.gguf_file if resolved.gguf_file else resolved.load_dir
        disk = _dir_size(cache) if cache and cache.exists() else _dir_size(source)
        return chat, disk
    if engine == "ort-int4" or engine in _variants(args):
        from ragcoder.chains.llm.ort_chat import load_ort_chat_model

        folder = Path(_variants(args).get(engine, args.ort_dir))
        return load_ort_chat_model(folder, max_new_tokens=args.new_tokens), _dir_size(folder)
    raise ValueError(engine)


def _variants(args: argparse.Namespace) -> dict[str, str]:
    """``--variant NAME=FOLDER``: other ONNX forms, run as engine ``ort-NAME`` (single stream only)."""
    return {f"ort-{v.split('=', 1)[0]}": v.split("=", 1)[1] for v in args.variant}


def _timed_stream(chat: Any, prompt: str, new_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    first = last = None
    usage: dict[str, Any] = {}
    for chunk in chat.stream(prompt, max_new_tokens=new_tokens):
        now = time.perf_counter()
        if chunk.content:
            first = first or now
            last = now
        usage = chunk.usage_metadata or usage
    out = int(usage.get("output_tokens", 0))
    assert first is not None and last is not None and out > 1, "no tokens generated"
    return {
        "prompt_tokens": usage["input_tokens"],
        "new_tokens": out,
        "first_token_s": first - started,
        "prefill_tok_s": usage["input_tokens"] / (first - started),
        "decode_tok_s": (out - 1) / (last - first),
    }


def _work_chat(engine: str, args: argparse.Namespace) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage

    started = time.perf_counter()
    chat, disk = _chat_model(engine, args)
    chat.invoke("Say OK.", max_new_tokens=1)  # first-run set-up, as a server does before serving
    result: dict[str, Any] = {
        "engine": engine,
        "load_s": time.perf_counter() - started,
        "disk_gb": disk / 1e9,
    }
    result.update(_timed_stream(chat, DECODE_PROMPT, args.new_tokens))
    if args.batch and engine not in _variants(args):
        prompts = BATCH_PROMPTS[: args.batch]
        t0 = time.perf_counter()
        batched = chat.batch(prompts, max_new_tokens=args.new_tokens)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        single = [chat.invoke(p, max_new_tokens=args.new_tokens) for p in prompts]
        single_s = time.perf_counter() - t0
        result["batch_tok_s"] = sum(m.usage_metadata["output_tokens"] for m in batched) / batch_s
        result["single_tok_s"] = sum(m.usage_metadata["output_tokens"] for m in single) / single_s
        result["batch_same_text"] = sum(a.content == b.content for a, b in zip(batched, single, strict=True))
    if args.samples and engine == "ort-int4":
        messages = [HumanMessage(BATCH_PROMPTS[0])]
        options = {"temperature": 0.8, "max_new_tokens": args.new_tokens}
        t0 = time.perf_counter()
        shared = chat.generate([messages], n=args.samples, seed=1, **options).generations[0]
        shared_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        apart = [chat.invoke(messages, seed=i, **options) for i in range(args.samples)]
        apart_s = time.perf_counter() - t0
        result["samples_shared_s"] = shared_s
        result["samples_apart_s"] = apart_s
        result["samples_shared_tokens"] = sum(g.message.usage_metadata["output_tokens"] for g in shared)
        result["samples_apart_tokens"] = sum(m.usage_metadata["output_tokens"] for m in apart)
    result["peak_rss_gb"] = _rss_gb()
    return result


def _work_ortgenai(args: argparse.Namespace) -> dict[str, Any]:
    """onnxruntime-genai's own generator loop on the same folder (decode only: a reference)."""
    import numpy as np
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    started = time.perf_counter()
    model = og.Model(str(args.ort_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(args.ort_dir))
    load_s = time.perf_counter() - started
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": DECODE_PROMPT}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + args.new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    t0 = time.perf_counter()
    generator.append_tokens(np.array(ids, dtype=np.int32))
    times = []
    while not generator.is_done():
        generator.generate_next_token()
        times.append(time.perf_counter())
    out = len(times)
    return {
        "engine": "ortgenai-int4",
        "load_s": load_s,
        "disk_gb": _dir_size(Path(args.ort_dir)) / 1e9,
        "prompt_tokens": len(ids),
        "new_tokens": out,
        "first_token_s": times[0] - t0,
        "prefill_tok_s": len(ids) / (times[0] - t0),
        "decode_tok_s": (out - 1) / (times[-1] - times[0]),
        "peak_rss_gb": _rss_gb(),
    }


def _work_ct2(args: argparse.Namespace) -> dict[str, Any]:
    import ctranslate2
    from transformers import AutoTokenizer

    started = time.perf_counter()
    generator = ctranslate2.Generator(
        str(args.ct2_dir), device="cpu", compute_type="int8", intra_threads=len(os.sched_getaffinity(0))
    )
    tokenizer = AutoTokenizer.from_pretrained(str(args.ct2_dir))
    load_s = time.perf_counter() - started

    def tokens(text: str) -> list[str]:
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer.convert_ids_to_tokens(tokenizer(chat, add_special_tokens=False)["input_ids"])

    options = {
        "max_length": args.new_tokens,
        "sampling_topk": 1,
        "end_token": ["<|im_end|>", "<|endoftext|>"],
    }
    prompt = tokens(DECODE_PROMPT)
    t0 = time.perf_counter()
    times = [time.perf_counter() for _ in generator.generate_tokens(prompt, **options)]
    out = len(times)
    result = {
        "engine": "ct2-int8",
        "load_s": load_s,
        "disk_gb": _dir_size(Path(args.ct2_dir)) / 1e9,
        "prompt_tokens": len(prompt),
        "new_tokens": out,
        "first_token_s": times[0] - t0,
        "prefill_tok_s": len(prompt) / (times[0] - t0),
        "decode_tok_s": (out - 1) / (times[-1] - times[0]),
    }
    if args.batch:
        batch = [tokens(p) for p in BATCH_PROMPTS[: args.batch]]
        t0 = time.perf_counter()
        together = generator.generate_batch(batch, include_prompt_in_result=False, **options)
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        apart = [generator.generate_batch([b], include_prompt_in_result=False, **options)[0] for b in batch]
        single_s = time.perf_counter() - t0
        result["batch_tok_s"] = sum(len(r.sequences_ids[0]) for r in together) / batch_s
        result["single_tok_s"] = sum(len(r.sequences_ids[0]) for r in apart) / single_s
        result["batch_same_text"] = sum(
            a.sequences_ids == b.sequences_ids for a, b in zip(together, apart, strict=True)
        )
    result["peak_rss_gb"] = _rss_gb()
    return result


def _work_cold(args: argparse.Namespace) -> None:
    """Load the candidate engine in this fresh process and print a line at its first streamed token."""
    from ragcoder.chains.llm.engines import load_chat

    chat = load_chat(str(args.ort_dir), engine="ort", max_new_tokens=16)
    for chunk in chat.stream(COLD_PROMPT):
        if chunk.content:
            print("FIRST", getattr(chat, "engine", "torch"), flush=True)
            return


def _work_client(args: argparse.Namespace) -> None:
    """A fresh client of a running server: print a line at its first streamed token."""
    from ragcoder.chains.llm.served import probe

    info = probe(socket=args.socket)
    assert info is not None, f"no server on {args.socket}"
    from langchain_openai import ChatOpenAI
    from ragcoder.chains.llm.served import _http_client

    chat = ChatOpenAI(
        base_url=info.base_url,
        api_key="-",
        model=info.model,
        max_tokens=16,
        http_client=_http_client(args.socket, None),
    )
    for chunk in chat.stream(COLD_PROMPT):
        if chunk.content:
            print("FIRST", info.engine, flush=True)
            return


# -- the parent ---------------------------------------------------------------------------------


def _child(args: argparse.Namespace, *extra: str, timeout: float = 3600) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        *extra,
        "--model",
        args.model,
        "--ort-dir",
        str(args.ort_dir),
        "--ct2-dir",
        str(args.ct2_dir),
        "--new-tokens",
        str(args.new_tokens),
        "--batch",
        str(args.batch),
        "--samples",
        str(args.samples),
        *(f"--variant={v}" for v in args.variant),
    ]
    if extra == ("--worker", "llamacpp-gguf"):  # under its own interpreter (llamacpp_worker.py: why)
        cmd = [args.llamacpp_python, str(Path(__file__).with_name("llamacpp_worker.py")), "--gguf"]
        cmd += [_installed_gguf(args.model), "--prompt", DECODE_PROMPT, "--new-tokens", str(args.new_tokens)]
        cmd += [f"--batch-prompt={p}" for p in BATCH_PROMPTS[: args.batch]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _installed_gguf(model: str) -> str:
    from ragcoder.chains.llm.int8_cache import model_folder
    from ragcoder.chains.llm.models import GGUF_NAME, resolve_model

    return str(model_folder(resolve_model(model)) / GGUF_NAME)


def _first_token_s(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds from starting ``cmd`` to its ``FIRST`` line."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("FIRST"):
            elapsed = time.perf_counter() - started
            proc.wait(timeout=120)
            return elapsed
    raise RuntimeError(f"no first token from {cmd}: {proc.stderr.read() if proc.stderr else ''}")


def _served_first_token(args: argparse.Namespace) -> tuple[float, float]:
    """(server ready seconds, fresh client's first-token seconds) for ``ragcoder serve``."""
    folder = Path(tempfile.mkdtemp(prefix="rcb-", dir="/tmp"))
    socket = folder / "s.sock"
    ragcoder = str(Path(sys.executable).with_name("ragcoder"))
    server = subprocess.Popen(
        [ragcoder, "serve", "--model", str(args.ort_dir), "--engine", "ort", "--socket", str(socket)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = time.perf_counter()
        assert server.stdout is not None
        line = server.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"serve did not start: {line}{server.stderr.read() if server.stderr else ''}")
        ready_s = time.perf_counter() - started
        client = [
            sys.executable,
            __file__,
            "--worker",
            "client",
            "--socket",
            str(socket),
            "--model",
            args.model,
        ]
        return ready_s, min(_first_token_s(client) for _ in range(3))
    finally:
        server.terminate()
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument(
        "--ort-dir", type=Path, default=None, help="ONNX folder [default: the installed one]."
    )
    parser.add_argument("--ct2-dir", type=Path, default=None, help="CTranslate2 folder (skipped if absent).")
    parser.add_argument("--engines", default="torch-int8,ort-int4,ortgenai-int4,ct2-int8")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8, help="Prompts in the batch test (0: skip).")
    parser.add_argument("--samples", type=int, default=8, help="Samples of one prompt (0: skip).")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=FOLDER: another ONNX form, benched as engine ort-NAME (decode, RSS, disk).",
    )
    parser.add_argument(
        "--llamacpp-python",
        default=None,
        help="An interpreter with llama-cpp-cffi installed: adds engine llamacpp-gguf (llamacpp_worker.py).",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--socket", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ort_dir is None:
        from ragcoder.chains.llm.engines import onnx_folder

        args.ort_dir = onnx_folder(args.model)
    if args.worker:
        work = {"ortgenai-int4": _work_ortgenai, "ct2-int8": _work_ct2}
        if args.worker == "cold":
            _work_cold(args)
        elif args.worker == "client":
            _work_client(args)
        else:
            print(
                json.dumps(work[args.worker](args) if args.worker in work else _work_chat(args.worker, args))
            )
        return

    engines = [e for e in args.engines.split(",") if e] + list(_variants(args))
    engines += ["llamacpp-gguf"] if args.llamacpp_python else []
    if "ct2-int8" in engines and not (args.ct2_dir and Path(args.ct2_dir).is_dir()):
        engines.remove("ct2-int8")
    print(
        f"engine bench: {args.model}, {args.new_tokens} new tokens, batch {args.batch}, "
        f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}"
    )
    results = {}
    for engine in engines:
        results[engine] = row = _child(args, "--worker", engine)
        print(
            f"{engine:<14} load {row['load_s']:5.1f}s  prefill {row['prefill_tok_s']:6.1f} tok/s  "
            f"decode {row['decode_tok_s']:5.2f} tok/s  ({row['new_tokens']} tokens)  "
            f"peak RSS {row['peak_rss_gb']:.2f} GB  disk {row['disk_gb']:.2f} GB",
            flush=True,
        )
        if "batch_tok_s" in row:
            print(
                f"{'':<14} batch-{args.batch} {row['batch_tok_s']:5.2f} tok/s vs one at a time "
                f"{row['single_tok_s']:5.2f} tok/s ({row['batch_same_text']}/{args.batch} identical texts)"
            )
        if "samples_shared_s" in row:
            print(
                f"{'':<14} {args.samples} samples of one prompt: {row['samples_shared_s']:.1f}s for "
                f"{row['samples_shared_tokens']} tokens with one prefill vs {row['samples_apart_s']:.1f}s "
                f"for {row['samples_apart_tokens']} tokens apart"
            )
    cold = min(
        _first_token_s(
            [
                sys.executable,
                __file__,
                "--worker",
                "cold",
                "--model",
                args.model,
                "--ort-dir",
                str(args.ort_dir),
            ]
        )
        for _ in range(2)
    )
    ready, served = _served_first_token(args)
    print(f"ragcoder serve ready in {ready:.1f}s")
    default, torch_row = results.get("ort-int4"), results.get("torch-int8")
    if default and torch_row:
        x, y = default["decode_tok_s"], torch_row["decode_tok_s"]
        print(f"decode tok/s: default {x:.2f} vs torch-int8 {y:.2f} = {x / y:.2f} x")
    if default and "batch_tok_s" in default:
        x, y = default["batch_tok_s"], default["single_tok_s"]
        print(f"batch-{args.batch} tok/s: default {x:.2f} vs one at a time {y:.2f} = {x / y:.2f} x")
    print(f"first token: served {served:.2f} s, cold {cold:.2f} s")


if __name__ == "__main__":
    main()
