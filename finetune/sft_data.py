"""Instruction -> code examples as the model will see them: the agent's own codegen prompt, chat
formatted by the model's template, with labels only on the response tokens."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcoder.errors import DataError

IGNORE_INDEX = -100  # torch's cross-entropy skips these: no loss on the prompt


@dataclass(frozen=True)
class Example:
    instruction: str
    response: str  # code, or a reply with a fenced code block
    source: str = ""


def read_examples(path: Path) -> list[Example]:
    examples = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise DataError(f"{path}:{lineno}: not a JSON line") from None
            if "messages" in data:
                users = [m["content"] for m in data["messages"] if m.get("role") == "user"]
                bots = [m["content"] for m in data["messages"] if m.get("role") == "assistant"]
                if not users or not bots:
                    raise DataError(f"{path}:{lineno}: 'messages' needs a user and an assistant turn")
                data = {"instruction": users[-1], "response": bots[-1], "source": data.get("source", "")}
            instruction, response = data.get("instruction"), data.get("response")
            if not isinstance(instruction, str) or not isinstance(response, str) or not response.strip():
                raise DataError(f"{path}:{lineno}: needs string 'instruction' and non-empty 'response'")
            examples.append(Example(instruction, response, str(data.get("source", ""))))
    return examples


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_reply(response: str) -> str:
    """The assistant turn: the code in a fenced block, as the agent's extractor expects."""
    text = response.strip()
    return text if "```" in text else f"```python\n{text}\n```"


def prompt_messages(instruction: str) -> list[dict[str, str]]:
    """The messages the agent sends for ``instruction`` (no retrieved docs; examples as tests)."""
    from ragcoder.agent.checks import extract_example_tests
    from ragcoder.chains.prompting.prompts import DEMO_HINT, codegen_prompt, format_context, format_tests

    tests = extract_example_tests(instruction)
    values = {
        "instruction": instruction.strip(),
        "context": format_context([]),
        "tests": format_tests(tests),
        "demo": "" if tests else DEMO_HINT,
        "code": "",
        "feedback": "",
    }
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return [
        {"role": roles[m.type], "content": str(m.content)} for m in codegen_prompt().format_messages(**values)
    ]


def encode(example: Example, tokenizer: Any, max_len: int) -> dict[str, list[int]] | None:
    """input_ids and labels (prompt masked); None when the prompt alone does not fit ``max_len``."""
    messages = prompt_messages(example.instruction)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": as_reply(example.response)}], tokenize=False
    )
    if not full.startswith(prompt):  # a template that rewrites earlier turns: append by hand
        full = prompt + as_reply(example.response) + (tokenizer.eos_token or "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full.rstrip("\n"), add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_len - 8:
        return None
    full_ids = full_ids[:max_len]
    labels = [IGNORE_INDEX] * len(prompt_ids) + full_ids[len(prompt_ids) :]
    return {"input_ids": full_ids, "labels": labels[: len(full_ids)]}


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch: padding gets attention 0 and label IGNORE_INDEX."""
    import torch

    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
