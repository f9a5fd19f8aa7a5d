"""Which MatMulNBits layouts hold a GGUF Q4_K / Q6_K matrix exactly, and what each costs on the CPU.

ONNX Runtime's ``MatMulNBits`` computes ``A @ W.T`` with ``W = scale * (q - zero)`` per block. A
Q4_K block is ``scale * q - minimum`` (scale and minimum arbitrary floats), a Q6_K block of 16 is
``scale * q`` with ``q`` in -32..31. Candidates:

- ``4b sym``: the builder's symmetric int4 (zero 8): the speed reference; not exact for Q4_K.
- ``4b u8 zero``: integer zero points: exact only where ``minimum / scale`` is an integer 0..15.
- ``4b float zero``: zero point ``minimum / scale`` as a float: exact.
- ``4b + offsets``: symmetric int4 plus ``blocksum(A) @ offsets.T`` (a float matmul of 1/32 the
  size): exact (chains/llm/gguf_blocks.py).
- ``8b /16``: 8-bit blocks of 16 (Q6_K, exact), ``8b /32`` for comparison.

``--rows 1,8`` instead times only ``4b sym`` with 1 and 8 rows of A (a batch of 8 sequences
decoding together), at accuracy 4 and 0: how much a batched step costs against a single one.

Exactness: each form's weights read back through the op (A = identity, accuracy_level 0) against
the float matrix. Speed: ``--copies`` different matrices of the real shape per run (so they come
from memory, not cache, as in decoding), batch 1, accuracy_level 4 (int8 activations, as the
builder's graph), best of 5; ratio to ``4b sym`` of the same run. Run under the heavy lock:

    flock /tmp/ragcoder-heavy.lock python bench/matmulnbits_layouts.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SHAPES = [(8960, 1536), (1536, 8960), (2048, 1536), (151936, 1536)]  # N x K: gate/up, down, qkv, lm_head


def q4k_like(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K-shaped integers, scales and minimums (6-bit multiples of fp16 super-block values)."""
    q = rng.integers(0, 16, (n, k), dtype=np.uint8)
    d = rng.uniform(1e-4, 3e-4, (n, k // 256, 1)).astype(np.float16).astype(np.float32)
    dmin = rng.uniform(1e-4, 3e-4, (n, k // 256, 1)).astype(np.float16).astype(np.float32)
    scale = (d * rng.integers(1, 64, (n, k // 256, 8))).reshape(n, k // 32)
    minimum = (dmin * rng.integers(0, 64, (n, k // 256, 8))).reshape(n, k // 32)
    return q, scale.astype(np.float32), minimum.astype(np.float32)


def pack4(q: np.ndarray) -> np.ndarray:
    n, k = q.shape
    q = q.astype(np.uint8).reshape(n, k // 32, 32)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def layouts(rng: np.random.Generator, n: int, k: int, *, weights: bool = False) -> dict[str, dict[str, Any]]:
    """Each candidate: its initializers and attributes (and with ``weights`` the float matrix it
    should compute with, under ``w``)."""
    q, scale, minimum = q4k_like(rng, n, k)
    z = np.clip(np.round(minimum / scale), 0, 15).astype(np.uint8)
    q6 = rng.integers(-32, 32, (n, k), dtype=np.int8)
    s16 = rng.uniform(1e-4, 3e-2, (n, k // 16)).astype(np.float32)
    s32 = s16[:, ::2].copy()
    w4 = w6 = w6b = None
    if weights:
        w4 = (scale[..., None] * q.reshape(n, k // 32, 32) - minimum[..., None]).reshape(n, k)
        w6 = (s16[..., None] * q6.reshape(n, k // 16, 16)).reshape(n, k)
        w6b = (s32[..., None] * q6.reshape(n, k // 32, 32)).reshape(n, k)
    q6 = q6.astype(np.int16) + 128
    return {
        "4b sym": {"bits": 4, "block": 32, "B": pack4(q), "S": scale, "w": w4},
        "4b u8 zero": {
            "bits": 4, "block": 32, "B": pack4(q), "S": scale, "w": w4,
            "Z": z[:, 0::2] | (z[:, 1::2] << 4),
        },
        "4b float zero": {"bits": 4, "block": 32, "B": pack4(q), "S": scale, "Z": minimum / scale, "w": w4},
        "4b + offsets": {
            "bits": 4, "block": 32, "B": pack4(q), "S": scale, "w": w4,
            "offsets": np.ascontiguousarray((8 * scale - minimum).T),
        },
        "8b /16": {
            "bits": 8, "block": 16, "B": q6.astype(np.uint8).reshape(n, k // 16, 16), "S": s16,
            "w": w6,
        },
        "8b /32": {
            "bits": 8, "block": 32, "B": q6.astype(np.uint8).reshape(n, k // 32, 32), "S": s32,
            "w": w6b,
        },
    }  # fmt: skip


def graph(k: int, n: int, forms: list[dict[str, Any]], accuracy_level: int) -> bytes:
    """One input [1, 1, K]; each form's matmul on it; their outputs summed (every weight is read)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outs = [], [], []
    if any("offsets" in f for f in forms):
        inits += [
            numpy_helper.from_array(np.array([0, 0, k // 32, 32], np.int64), "shape"),
            numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        ]
        nodes += [
            helper.make_node("Reshape", ["A", "shape"], ["blocks"]),
            helper.make_node("ReduceSum", ["blocks", "axes"], ["sums"], keepdims=0),
        ]
    for i, form in enumerate(forms):
        ins = ["A", f"B{i}", f"S{i}"]
        inits += [numpy_helper.from_array(form["B"], f"B{i}"), numpy_helper.from_array(form["S"], f"S{i}")]
        if "Z" in form:
            inits.append(numpy_helper.from_array(form["Z"], f"Z{i}"))
            ins.append(f"Z{i}")
        nodes.append(
            helper.make_node(
                "MatMulNBits", ins, [f"Y{i}"], domain="com.microsoft", K=k, N=n,
                bits=form["bits"], block_size=form["block"], accuracy_level=accuracy_level,
            )
        )  # fmt: skip
        out = f"Y{i}"
        if "offsets" in form:
            inits.append(numpy_helper.from_array(form["offsets"], f"O{i}"))
            nodes += [
                helper.make_node("MatMul", ["sums", f"O{i}"], [f"YO{i}"]),
                helper.make_node("Add", [out, f"YO{i}"], [f"Y{i}+"]),
            ]
            out = f"Y{i}+"
        outs.append(out)
    nodes.append(helper.make_node("Sum", outs, ["Y"]))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["B", "S", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["B", "S", n])],
        inits,
    )
    model = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    return model.SerializeToString()


def session(model: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def best_ms(run: Callable[[], Any], repeats: int = 5, budget_s: float = 1.0) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        started, count = time.perf_counter(), 0
        while (count == 0 or time.perf_counter() - started < budget_s / repeats) and count < 50:
            run()
            count += 1
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e3


def batch_rows(rng: np.random.Generator, rows: list[int], args: argparse.Namespace) -> None:
    """Time per call of ``4b sym`` for each row count, and its ratio to ``rows[0]``'s, with int8
    activations (accuracy 4, the builder's) and in fp32 (accuracy 0)."""
    for n, k in SHAPES:
        copies = 1 if n > 100_000 else args.copies
        forms = [layouts(rng, n, k)["4b sym"] for _ in range(copies)]
        for threads, level in ((int(t), lv) for t in args.threads.split(",") for lv in (4, 0)):
            s = session(graph(k, n, forms, level), threads)
            times = {}
            for m in rows:
                a = rng.standard_normal((1, m, k)).astype(np.float32)
                times[m] = best_ms(lambda s=s, a=a: s.run(None, {"A": a}))
            cells = "  ".join(
                f"rows {m}: {ms:.2f} ms ({ms / times[rows[0]]:.2f}x)" for m, ms in times.items()
            )
            print(f"N={n} K={k} x{copies} threads={threads} accuracy {level}: {cells}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=8, help="Different matrices per run (out of cache).")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument(
        "--rows",
        default="",
        help="Only time the builder's symmetric int4 with this many rows of A (sequences decoding "
        "together, e.g. 1,2,4,8): how a batch's step grows.",
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    if args.rows:
        batch_rows(rng, [int(r) for r in args.rows.split(",")], args)
        return

    print("exactness: max |weight through the op - float weight| / max |weight| (N=256, K=1536, accuracy 0)")
    k = 1536
    eye = np.eye(k, dtype=np.float32)[None]
    for name, form in layouts(rng, 256, k, weights=True).items():
        got = session(graph(k, 256, [form], 0), 1).run(None, {"A": eye})[0][0].T
        err = np.abs(got - form["w"]).max() / np.abs(form["w"]).max()
        print(f"  {name:<14} {err:.2e}")

    for n, k in SHAPES:
        copies = 1 if n > 100_000 else args.copies
        forms = [layouts(rng, n, k) for _ in range(copies)]
        a = rng.standard_normal((1, 1, k)).astype(np.float32)
        for threads in (int(t) for t in args.threads.split(",")):
            times = {}
            for name in forms[0]:
                s = session(graph(k, n, [f[name] for f in forms], 4), threads)
                times[name] = best_ms(
                    lambda s=s, a=a: s.run(None, {"A": a}), budget_s=3.0 if "float" in name else 1.0
                )
            base = times["4b sym"]
            cells = "  ".join(f"{name} {ms:.2f} ms ({ms / base:.2f}x)" for name, ms in times.items())
            print(f"N={n} K={k} x{copies} threads={threads}: {cells}", flush=True)


if __name__ == "__main__":
    main()
