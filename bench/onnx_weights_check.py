"""How close each ONNX form's next-token distribution is to the full-precision model's, one prompt.

Teacher-forced over a fixed text (this repo's chains/llm/gguf_blocks.py and onnx_gguf.py, first
``--tokens`` tokens): every position's logits from each ONNX folder against those of the HF folder
run in fp32 by transformers (the GGUF's weights dequantized, so the reference every form approximates).
Prints per form: top-1 agreement, mean KL(reference || form) in nats, mean |logit difference|.
Loads the fp32 model (about 7 GB): run under the heavy lock.

    flock /tmp/ragcoder-heavy.lock python bench/onnx_weights_check.py --hf $MODEL/hf \\
        builder-int4=$MODEL/ort-int4 gguf-blocks=PATH
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hf", type=Path, required=True, help="The HF folder (reference, run in fp32).")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("forms", nargs="+", help="NAME=ONNX_FOLDER")
    args = parser.parse_args(argv)

    import torch
    from ragcoder.chains.llm.onnx_decoder import OnnxDecoder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "\n".join((ROOT / "chains/llm" / f).read_text() for f in ("gguf_blocks.py", "onnx_gguf.py"))
    ids = AutoTokenizer.from_pretrained(args.hf)(text)["input_ids"][: args.tokens]
    batch = np.array([ids], dtype=np.int64)
    logits = {}
    for spec in args.forms:
        name, folder = spec.split("=", 1)
        decoder = OnnxDecoder(folder)
        kv = decoder.new_rows(1, len(ids))
        logits[name] = np.concatenate(
            [decoder.step(kv, batch[:, i : i + 256])[0] for i in range(0, len(ids), 256)]
        ).astype(np.float64)
        del decoder
    model = AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32)
    with torch.inference_mode():
        ref = model(torch.tensor(batch)).logits[0].double().numpy()
    ref_logp = _log_softmax(ref)
    print(f"{len(ids)} positions, reference: {args.hf} in fp32")
    for name, got in logits.items():
        logp = _log_softmax(got)
        kl = (np.exp(ref_logp) * (ref_logp - logp)).sum(-1).mean()
        top1 = (got.argmax(-1) == ref.argmax(-1)).mean()
        print(
            f"{name:<16} top-1 agreement {top1:6.1%}  mean KL {kl:.4f} nats  "
            f"mean |logit diff| {np.abs(got - ref).mean():.3f}"
        )


if __name__ == "__main__":
    main()
