"""The builder's ONNX form with every quantized matmul reading the GGUF's own blocks (no re-rounding).

:func:`write_gguf_weights` takes a folder the ONNX Runtime GenAI builder made from the HF folder
dequantized from a GGUF and replaces each ``MatMulNBits`` node's weights with the GGUF's Q4_K /
Q6_K blocks (chains/llm/gguf_blocks.py), so the graph computes with exactly the GGUF's weights:

- Q6_K matrices become 8-bit MatMulNBits with blocks of 16.
- Q4_K matrices stay 4-bit with blocks of 32; their per-block minimum is added by a small float
  matmul: ``y = MatMulNBits(A) + blocksum(A) @ offsets.T``, with ``blocksum(A)`` (A's sums over
  each block of 32 inputs) made once per input and shared by the matmuls that read it.
- A fused matmul whose parts differ (q and k Q4_K, v Q6_K in half of Qwen's layers) is split into
  one node per run of equal layout, joined by a Concat.

Only for a model whose weights are the GGUF's: a merged LoRA adapter changes them.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ragcoder.chains.llm.gguf_blocks import NBitsWeight, nbits_weight, stack_rows

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
MS_DOMAIN = "com.microsoft"

# the builder's matmul (between "model.layers.N." and ".MatMul") -> the GGUF tensors along its N
LAYER_TENSORS: dict[str, tuple[str, ...]] = {
    "attn.qkv_proj": ("attn_q", "attn_k", "attn_v"),
    "attn.q_proj": ("attn_q",),
    "attn.k_proj": ("attn_k",),
    "attn.v_proj": ("attn_v",),
    "attn.o_proj": ("attn_output",),
    "mlp.gate_proj": ("ffn_gate",),
    "mlp.up_proj": ("ffn_up",),
    "mlp.down_proj": ("ffn_down",),
}
# GGUF converters reorder the q and k rows of some architectures (llama's rotary layout); these
# keep the HF row order, so GGUF rows are the ONNX matmul's rows as they are
SAME_ROW_ORDER = frozenset({"qwen2"})
_LAYER_WEIGHT = re.compile(r"^model\.layers\.(\d+)\.(.+)\.MatMul\.weight_Q\d$")
_LM_HEAD = re.compile(r"^lm_head\.MatMul\.weight_Q\d$")


@dataclass
class RewriteReport:
    """What :func:`write_gguf_weights` did: matmuls rewritten and the largest weight difference."""

    matmuls: int = 0
    split: int = 0  # fused matmuls split into runs of one layout
    layouts: dict[str, int] = field(default_factory=dict)  # "4-bit/32" -> matrices
    max_abs_diff: float = 0.0  # between the op's weights and the GGUF's dequantized ones

    def as_record(self) -> dict[str, Any]:
        return {
            "weights": "gguf-blocks",
            "matmuls": self.matmuls,
            "split": self.split,
            "layouts": self.layouts,
            "max_abs_diff": self.max_abs_diff,
        }


def gguf_names(weight: str, gguf_tensors: set[str]) -> list[str]:
    """The GGUF tensors (in order along N) behind the builder's MatMulNBits weight ``weight``."""
    if match := _LAYER_WEIGHT.match(weight):
        layer, part = match.groups()
        if part in LAYER_TENSORS:
            return [f"blk.{layer}.{name}.weight" for name in LAYER_TENSORS[part]]
    elif _LM_HEAD.match(weight):
        return ["output.weight" if "output.weight" in gguf_tensors else "token_embd.weight"]
    raise ValueError(f"no GGUF tensor is known for the ONNX weight {weight!r}")


def matmul_nodes(
    name: str,
    a: str,
    y: str,
    parts: list[NBitsWeight],
    *,
    accuracy_level: int,
    block_sums: dict[tuple[str, int], str],
) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Nodes computing ``y = a @ W.T`` for ``W`` the rows of ``parts`` stacked, and their initializers.
    ``block_sums`` maps an input to its shared block-sum tensor (filled here; the caller adds the
    nodes that make it, from :func:`block_sum_nodes`)."""
    from onnx import helper

    runs: list[list[NBitsWeight]] = []
    for part in parts:
        if runs and (runs[-1][0].bits, runs[-1][0].block_size) == (part.bits, part.block_size):
            runs[-1].append(part)
        else:
            runs.append([part])
    nodes, inits = [], {}
    outputs = []
    for i, run in enumerate(runs):
        w = stack_rows(run)
        tag = f"{name}/gguf{i}" if len(runs) > 1 else f"{name}/gguf"
        out = y if len(runs) == 1 and w.offsets is None else f"{tag}/output_0"
        inits[f"{tag}.weight"] = w.packed
        inits[f"{tag}.scales"] = w.scales
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [a, f"{tag}.weight", f"{tag}.scales"],
                [out],
                name=f"{tag}/MatMulNBits",
                domain=MS_DOMAIN,
                K=w.packed.shape[1] * w.block_size,
                N=w.rows,
                bits=w.bits,
                block_size=w.block_size,
                accuracy_level=accuracy_level,
            )
        )
        if w.offsets is not None:
            sums = block_sums.setdefault((a, w.block_size), f"{a}/blocksum{w.block_size}")
            inits[f"{tag}.offsets"] = np.ascontiguousarray(w.offsets.T)  # [K / block, N]
            summed = y if len(runs) == 1 else f"{tag}/sum_0"
            nodes += [
                helper.make_node(
                    "MatMul", [sums, f"{tag}.offsets"], [f"{tag}/offset_0"], name=f"{tag}/Offsets"
                ),
                helper.make_node("Add", [out, f"{tag}/offset_0"], [summed], name=f"{tag}/AddOffsets"),
            ]
            out = summed
        outputs.append(out)
    if len(runs) > 1:
        nodes.append(helper.make_node("Concat", outputs, [y], name=f"{name}/gguf/Concat", axis=-1))
    return nodes, inits


def block_sum_nodes(a: str, block_size: int, k: int, sums: str) -> tuple[list[Any], dict[str, np.ndarray]]:
    """``sums[b, s, j] = sum(a[b, s, j*block : (j+1)*block])`` for the builder's 3-D hidden states."""
    from onnx import helper

    shape = f"{sums}/shape"
    axes = f"{sums}/axes"
    nodes = [
        helper.make_node("Reshape", [a, shape], [f"{sums}/blocks"], name=f"{sums}/Reshape"),
        helper.make_node("ReduceSum", [f"{sums}/blocks", axes], [sums], name=f"{sums}/ReduceSum", keepdims=0),
    ]
    return nodes, {
        shape: np.array([0, 0, k // block_size, block_size], np.int64),
        axes: np.array([-1], np.int64),
    }


def max_abs_diff(weight: NBitsWeight, raw: np.ndarray, ggml_type: int, rows_at_once: int = 4096) -> float:
    """The largest difference between ``weight`` as the op computes it and gguf-py's dequantization
    of ``raw`` (in slices of rows: the lm_head alone is 0.9 GB in float32)."""
    import gguf

    worst = 0.0
    for start in range(0, weight.rows, rows_at_once):
        rows = slice(start, start + rows_at_once)
        offsets = None if weight.offsets is None else weight.offsets[rows]
        mine = NBitsWeight(weight.bits, weight.block_size, weight.packed[rows], weight.scales[rows], offsets)
        ref = gguf.quants.dequantize(raw[rows], gguf.GGMLQuantizationType(ggml_type))
        worst = max(worst, float(np.abs(mine.dequantize() - ref.reshape(mine.rows, -1)).max()))
    return worst


def gguf_architecture(reader: Any) -> str:
    field = reader.fields.get("general.architecture")
    return "" if field is None else bytes(field.parts[field.data[0]]).decode()


def _external_bytes(init: Any, folder: Path) -> bytes:
    info = {entry.key: entry.value for entry in init.external_data}
    with open(folder / info["location"], "rb") as handle:
        handle.seek(int(info.get("offset", 0)))
        return handle.read(int(info["length"]))


def _gguf_matrix(tensor: Any) -> tuple[np.ndarray, int, int, int]:
    cols, rows = (int(n) for n in tensor.shape[:2])  # GGUF lists the inner (K) dimension first
    return tensor.data, int(tensor.tensor_type), rows, cols


def write_gguf_weights(source: Path, gguf_path: Path, out: Path, *, check: bool = True) -> RewriteReport:
    """Write ``source``'s ONNX form into ``out`` (a new folder) with the GGUF's own weights in every
    quantized matmul; with ``check``, compare each matrix with the GGUF's dequantization."""
    import gguf
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if out.exists():
        raise FileExistsError(f"{out} exists: the rewrite writes a new folder")
    reader = gguf.GGUFReader(str(gguf_path))
    arch = gguf_architecture(reader)
    if arch not in SAME_ROW_ORDER:
        raise ValueError(
            f"GGUF architecture {arch!r} is not one whose rows map as they are ({sorted(SAME_ROW_ORDER)})"
        )
    tensors = {t.name: t for t in reader.tensors}
    model = onnx.load(str(source / MODEL_FILE), load_external_data=False)
    graph = model.graph
    old_inits = {init.name: init for init in graph.initializer}
    report = RewriteReport()
    new_nodes: list[Any] = []
    new_inits: dict[str, np.ndarray] = {}
    block_sums: dict[tuple[str, int], str] = {}
    made_sums: set[str] = set()
    dropped: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMulNBits" or node.domain != MS_DOMAIN:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        names = gguf_names(node.input[1], set(tensors))
        parts = [nbits_weight(*_gguf_matrix(tensors[n])) for n in names]
        rows = sum(p.rows for p in parts)
        cols = parts[0].packed.shape[1] * parts[0].block_size
        if (rows, cols) != (attrs["N"], attrs["K"]) or (len(node.input) > 3 and any(node.input[3:])):
            raise ValueError(
                f"{node.name}: GGUF {names} is {rows}x{cols}, the node N={attrs['N']} K={attrs['K']}"
            )
        if check:
            for name, part in zip(names, parts, strict=True):
                diff = max_abs_diff(part, tensors[name].data, int(tensors[name].tensor_type))
                report.max_abs_diff = max(report.max_abs_diff, diff)
        for part in parts:
            key = f"{part.bits}-bit/{part.block_size}"
            report.layouts[key] = report.layouts.get(key, 0) + 1
        nodes, inits = matmul_nodes(
            node.name, node.input[0], node.output[0], parts,
            accuracy_level=int(attrs.get("accuracy_level", 0)), block_sums=block_sums,
        )  # fmt: skip
        for (a, block), sums in block_sums.items():
            if sums not in made_sums:
                made_sums.add(sums)
                sum_nodes, sum_inits = block_sum_nodes(a, block, cols, sums)
                new_nodes += sum_nodes
                new_inits.update(sum_inits)
        new_nodes += nodes
        new_inits.update(inits)
        dropped.update(node.input[1:])
        report.matmuls += 1
        report.split += len({(p.bits, p.block_size) for p in parts}) > 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    kept = [init for init in graph.initializer if init.name not in dropped]
    for init in kept:  # read their bytes here: onnx refuses hard-linked data files
        if init.data_location == TensorProto.EXTERNAL:
            raw = _external_bytes(init, source)
            del init.external_data[:]
            init.data_location = TensorProto.DEFAULT
            init.raw_data = raw
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in new_inits.items())
    unused = set(old_inits) - dropped - {i.name for i in kept}
    assert not unused, unused
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in (MODEL_FILE, DATA_FILE):
            shutil.copy2(path, tmp / path.name)
    onnx.save(
        model,
        str(tmp / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    tmp.rename(out)
    return report
