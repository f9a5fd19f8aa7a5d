"""One ONNX decoder (the ONNX Runtime GenAI builder's ``model.onnx``) run step by step on CPU.

The builder's graph takes ``input_ids`` [B, S], ``attention_mask`` [B, T] and one key and one
value tensor per layer, and returns ``logits`` [B, S, V] and the new keys and values. Its
attention is ``GroupQueryAttention`` with the rotary embedding inside: a row's positions come
from its mask (``seqlens_k = sum(mask) - 1``), and when the past and present tensors are the
same buffer the operator writes the new keys and values in place, at each row's own length.

So this module owns the keys and values as plain numpy arrays (:class:`KVRows`, one
``[rows, kv_heads, capacity, head_size]`` array per layer and kind) and binds them as both input
and output: nothing is copied per step, a prompt's rows can be tiled into N rows (N samples after
one prefill), cut to a shared prefix and kept for a later prompt (prefix reuse), or extended by a
speculative chunk whose rejected tail is simply overwritten (prompt lookup). ``onnxruntime-genai``
itself is only needed to *build* the folder; running it needs ``onnxruntime`` alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_NAME = "genai_config.json"
# Prompts run in chunks: the graph computes logits for every position it is given (prompt lookup
# needs them), so a 2,000-token prompt in one piece would allocate 1.2 GB of logits.
PREFILL_CHUNK = 256


@dataclass
class KVRows:
    """The keys and values of ``len(lengths)`` rows; row ``r`` holds ``lengths[r]`` positions."""

    keys: list[np.ndarray]
    values: list[np.ndarray]
    lengths: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def take(self, rows: list[int] | np.ndarray) -> KVRows:
        """A copy holding only ``rows`` (in that order; a row may repeat: N samples of one prompt)."""
        index = np.asarray(rows, dtype=np.int64)
        used = int(self.lengths[index].max()) if len(index) else 0

        def pick(array: np.ndarray) -> np.ndarray:  # only the used positions: the rest stays unpaged
            out = np.zeros((len(index), *array.shape[1:]), array.dtype)
            out[:, :, :used] = array[index, :, :used]
            return out

        return KVRows(
            [pick(k) for k in self.keys], [pick(v) for v in self.values], self.lengths[index].copy()
        )

    def row_prefix(self, row: int, length: int) -> KVRows:
        """A one-row copy of the first ``length`` positions of ``row`` (to keep for prefix reuse)."""
        return KVRows(
            [k[row : row + 1, :, :length].copy() for k in self.keys],
            [v[row : row + 1, :, :length].copy() for v in self.values],
            np.array([length], dtype=np.int64),
        )

    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in zip(self.keys, self.values, strict=True))


class OnnxDecoder:
    """A loaded decoder graph plus what its ``genai_config.json`` says about it."""

    def __init__(self, folder: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        config = json.loads((self.folder / CONFIG_NAME).read_text())
        model = config["model"]
        decoder = model["decoder"]
        eos = model["eos_token_id"]
        self.eos_token_ids: frozenset[int] = frozenset(eos if isinstance(eos, list) else [eos])
        self.pad_token_id = int(model.get("pad_token_id", next(iter(self.eos_token_ids))))
        self.context_length = int(model.get("context_length", 32768))
        self.num_layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_size = int(decoder["head_size"])
        names = decoder["inputs"]
        self._past_key = [names["past_key_names"] % i for i in range(self.num_layers)]
        self._past_value = [names["past_value_names"] % i for i in range(self.num_layers)]
        outputs = decoder["outputs"]
        self._present_key = [outputs["present_key_names"] % i for i in range(self.num_layers)]
        self._present_value = [outputs["present_value_names"] % i for i in range(self.num_layers)]
        self._input_ids = names.get("input_ids", "input_ids")
        self._mask = names.get("attention_mask", "attention_mask")
        self._logits = outputs.get("logits", "logits")

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _cpu_threads()
        options.inter_op_num_threads = 1
        # Busy-waiting threads slow everyone down on a shared 2-core machine (like OMP_WAIT_POLICY)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.folder / decoder["filename"]), options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.dtype = np.float16 if inputs[self._past_key[0]].type == "tensor(float16)" else np.float32
        self._ort = ort

    def new_rows(self, rows: int, capacity: int) -> KVRows:
        shape = (rows, self.kv_heads, capacity, self.head_size)
        return KVRows(
            [np.zeros(shape, self.dtype) for _ in range(self.num_layers)],
            [np.zeros(shape, self.dtype) for _ in range(self.num_layers)],
            np.zeros(rows, dtype=np.int64),
        )

    def grow(self, kv: KVRows, capacity: int) -> KVRows:
        """The same rows in buffers of at least ``capacity`` positions (a copy when they must grow)."""
        if capacity <= kv.capacity:
            return kv
        bigger = self.new_rows(kv.rows, capacity)
        for new, old in zip(bigger.keys + bigger.values, kv.keys + kv.values, strict=True):
            new[:, :, : old.shape[2]] = old
        bigger.lengths[:] = kv.lengths
        return bigger

    def step(self, kv: KVRows, ids: np.ndarray, *, rows: slice | None = None) -> np.ndarray:
        """Run ``ids`` [B, S] after each row's stored positions; returns logits [B, S, V].

        Every row gets ``S`` new positions (written in place into ``kv``, whose lengths grow by
        ``S``). ``rows`` runs only those rows of ``kv`` (a contiguous slice: a prompt's prefill).
        """
        rows = rows or slice(0, kv.rows)
        lengths = kv.lengths[rows]
        batch, new = ids.shape
        if batch != len(lengths):
            raise ValueError(f"{batch} rows of ids for {len(lengths)} rows of keys and values")
        totals = lengths + new
        if int(totals.max()) > kv.capacity:
            raise ValueError(f"{int(totals.max())} positions do not fit a capacity of {kv.capacity}")
        mask = (np.arange(int(totals.max()))[None, :] < totals[:, None]).astype(np.int64)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._input_ids, np.ascontiguousarray(ids, dtype=np.int64))
        binding.bind_cpu_input(self._mask, mask)
        binding.bind_output(self._logits, "cpu")
        for layer in range(self.num_layers):
            for past, present, arrays in (
                (self._past_key, self._present_key, kv.keys),
                (self._past_value, self._present_value, kv.values),
            ):
                value = self._ort.OrtValue.ortvalue_from_numpy(arrays[layer][rows])
                binding.bind_ortvalue_input(past[layer], value)
                binding.bind_ortvalue_output(present[layer], value)  # the same buffer: written in place
        self.session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()
        kv.lengths[rows] = totals
        return logits

    def prefill(self, kv: KVRows, row: int, ids: list[int], chunk: int = PREFILL_CHUNK) -> np.ndarray:
        """Run one row's prompt tokens ``ids`` (after what the row holds) in chunks; returns the
        last position's logits [V]."""
        logits = None
        for start in range(0, len(ids), chunk):
            piece = np.asarray([ids[start : start + chunk]], dtype=np.int64)
            logits = self.step(kv, piece, rows=slice(row, row + 1))[0, -1]
        if logits is None:
            raise ValueError("nothing to prefill: the prompt has no tokens after the reused prefix")
        return logits


def _cpu_threads() -> int:
    wanted = os.environ.get("RAGCODER_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return max(1, int(wanted)) if wanted else len(os.sched_getaffinity(0))


def load_decoder(folder: str | Path, **kwargs: Any) -> OnnxDecoder:
    return OnnxDecoder(folder, **kwargs)
