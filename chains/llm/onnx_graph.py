"""A lossless rewrite of the builder's graph: the token-embedding table stored in fp16.

For the CPU the builder keeps the embedding table in the graph's fp32 (0.93 GB of Qwen 1.5B's
1.93 GB ONNX form), while the weights it read were fp16: every value is exactly an fp16. Storing
the table as fp16 and casting the looked-up rows back to fp32 gives the same numbers, bit for bit,
from half the disk and memory (the default install then fits in 3 GB with its GGUF). A table whose
values do not all fit fp16 exactly is left as it is.
"""

from __future__ import annotations

from pathlib import Path

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"


def halve_embedding(folder: Path, input_ids: str = "input_ids") -> bool:
    """Rewrite ``folder``'s model so its embedding table is fp16; True when it was rewritten."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(folder / MODEL_FILE))  # with its external data: about 2 GB for 1.5B
    graph = model.graph
    tables = {init.name: init for init in graph.initializer}
    gathers = [
        n for n in graph.node if n.op_type == "Gather" and n.input[0] in tables and n.input[1] == input_ids
    ]
    if len(gathers) != 1 or sum(gathers[0].input[0] in n.input for n in graph.node) != 1:
        return False  # no table, or one shared with another node (tied weights): leave it
    gather = gathers[0]
    init = tables[gather.input[0]]
    table = numpy_helper.to_array(init)
    if table.dtype != np.float32:
        return False
    half = table.astype(np.float16)
    if not np.array_equal(half.astype(np.float32), table):
        return False  # some value is not an fp16: halving would change the model
    init.CopyFrom(numpy_helper.from_array(half, init.name))
    looked_up = gather.output[0]
    gather.output[0] = f"{looked_up}/fp16"
    cast = helper.make_node(
        "Cast", [gather.output[0]], [looked_up], name=f"{gather.name}/Cast", to=TensorProto.FLOAT
    )
    graph.node.insert(list(graph.node).index(gather) + 1, cast)
    for path in (folder / MODEL_FILE, folder / DATA_FILE):
        path.unlink()
    onnx.save(
        model,
        str(folder / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    return True
