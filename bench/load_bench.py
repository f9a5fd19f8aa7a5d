"""Loading the default model's int8 file: the embedding rebuilt the old way against the new, one run.

    flock /tmp/ragcoder-heavy.lock python bench/load_bench.py

The int8 file (v4) leaves out the fp32 token embedding and rebuilds it from the GGUF at load
(:mod:`ragcoder.chains.llm.int8_cache`). ``old`` is that rebuild as first written (gguf-py's
whole-tensor ``dequantize``, a copy, rounding through fp16 and back); ``new`` is
:mod:`ragcoder.chains.llm.gguf_tensor` (slab by slab into one preallocated tensor). Each load runs in
a fresh process (interpreter start to a model ready to generate, as the cached branch of
``loading.load_weights`` does it), alternating ``old``/``new`` ``--repeats`` times; each prints its
seconds, the rebuild's seconds and its peak RSS. A last process rebuilds the embedding both ways
and checks they are equal bit for bit. The page cache is warm after the first load (the first
pair is not counted in the medians).

The installed files are read through hard links in a temporary folder: a load that fails removes
the file it read (so it is rebuilt), and here that must never be the user's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
STARTED = time.perf_counter()


def old_gguf_embedding(gguf: Path, where: dict[str, Any], rounding: str = "float32") -> Any:
    """The rebuild before chains/llm/gguf_tensor.py (int8_cache.py at e737124), kept to compare."""
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, dequantize

    stored_dtype = np.float32 if where["type"] == GGMLQuantizationType.F32 else np.uint8
    data = np.memmap(gguf, dtype=stored_dtype, mode="r", offset=where["offset"], shape=tuple(where["shape"]))
    weight = torch.from_numpy(np.copy(dequantize(data, GGMLQuantizationType(where["type"]))))
    return weight.to(getattr(torch, rounding)).to(torch.float32)


def _rss_gb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1e6  # kB
    return float("nan")


def _load(way: str, folder: Path, hf_dir: Path) -> dict[str, Any]:
    """One cold load in this (fresh) process, the embedding rebuilt ``way``."""
    from ragcoder.chains.llm import int8_cache
    from ragcoder.chains.llm.loading import prepare_generation, read_int8_cache
    from ragcoder.chains.llm.weights import load_tokenizer

    rebuild = old_gguf_embedding if way == "old" else int8_cache.gguf_embedding
    rebuild_s: list[tuple[float, float]] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        weight = rebuild(*args, **kwargs)
        rebuild_s.append((time.perf_counter() - started, time.process_time() - cpu))
        return weight

    int8_cache.gguf_embedding = timed
    tokenizer = load_tokenizer(hf_dir)
    model = read_int8_cache(folder / int8_cache.cache_name())
    if model is None or len(rebuild_s) != 1:
        raise SystemExit("the int8 file did not load through the GGUF rebuild")
    prepare_generation(model, tokenizer)
    return {
        "way": way,
        "load_s": time.perf_counter() - STARTED,
        "rebuild_s": rebuild_s[0][0],
        "rebuild_cpu_s": rebuild_s[0][1],  # less bent than wall time by other jobs on the cores
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "rss_after_gb": _rss_gb(),
    }


def _check(folder: Path) -> dict[str, Any]:
    """Both rebuilds of the installed GGUF's embedding, compared bit for bit."""
    import torch
    from ragcoder.chains.llm import int8_cache

    recipe = torch.load(folder / int8_cache.cache_name(), weights_only=False)["embedding"]
    new = int8_cache.gguf_embedding(folder / recipe["file"], recipe, recipe["rounding"])
    old = old_gguf_embedding(folder / recipe["file"], recipe, recipe["rounding"])
    return {
        "shape": list(new.shape),
        "ggml_type": recipe["type"],
        "rounding": recipe["rounding"],
        "bit_equal": bool(torch.equal(new.view(torch.int32), old.view(torch.int32))),
    }


def _linked_copy(model_folder: Path, into: Path) -> Path:
    from ragcoder.chains.llm.int8_cache import cache_name
    from ragcoder.chains.llm.models import GGUF_NAME

    for name in (cache_name(), GGUF_NAME):
        os.link(model_folder / name, into / name)
    return into


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument(
        "--repeats", type=int, default=3, help="old/new pairs (the first warms the page cache)"
    )
    parser.add_argument("--worker", choices=["old", "new", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hf-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "check":
        print(json.dumps(_check(args.folder)))
        return
    if args.worker:
        print(json.dumps(_load(args.worker, args.folder, args.hf_dir)))
        return

    from ragcoder.chains.llm.int8_cache import model_folder
    from ragcoder.chains.llm.models import resolve_model

    resolved = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:  # /tmp: same disk here
        folder = _linked_copy(model_folder(resolved), Path(tmp))
        common = ["--folder", str(folder), "--hf-dir", str(resolved.load_dir)]
        print(f"{args.model}: {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}")
        rows: list[dict[str, Any]] = []
        for pair in range(args.repeats):
            for way in ("old", "new"):
                row = _child("--worker", way, *common)
                rows.append({**row, "pair": pair})
                print(
                    f"pair {pair} {way}: load {row['load_s']:5.2f} s (embedding {row['rebuild_s']:.2f} s, "
                    f"{row['rebuild_cpu_s']:.2f} s CPU), load average {os.getloadavg()[0]:.1f}, peak RSS {row['peak_rss_gb']:.2f} GB, "
                    f"RSS after {row['rss_after_gb']:.2f} GB",
                    flush=True,
                )
        check = _child("--worker", "check", *common)
    print(f"check: {json.dumps(check)}")
    counted = [r for r in rows if r["pair"] > 0] or rows
    summary = {}
    for way in ("old", "new"):
        mine = [r for r in counted if r["way"] == way]
        summary[way] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("load_s", "rebuild_s", "rebuild_cpu_s", "peak_rss_gb")
        }
        print(
            f"median {way}: load {summary[way]['load_s']:.2f} s, embedding {summary[way]['rebuild_s']:.2f} s "
            f"({summary[way]['rebuild_cpu_s']:.2f} s CPU), "
            f"peak RSS {summary[way]['peak_rss_gb']:.2f} GB"
        )
    old, new = summary["old"], summary["new"]
    print(
        f"new/old: load {new['load_s'] / old['load_s']:.2f}x, embedding {new['rebuild_s'] / old['rebuild_s']:.2f}x "
        f"({new['rebuild_cpu_s'] / old['rebuild_cpu_s']:.2f}x CPU), "
        f"peak RSS {new['peak_rss_gb'] - old['peak_rss_gb']:+.2f} GB; bit-equal: {check['bit_equal']}"
    )


if __name__ == "__main__":
    main()
