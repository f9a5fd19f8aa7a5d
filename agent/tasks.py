"""A Task (one instruction, with optional tests) and reading them from prompt files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_INSTRUCTION_CHARS = 100_000


class TaskError(ValueError):
    """A task or prompt file the agent cannot use; the message names the problem and the fix."""

    hint = ""


@dataclass(frozen=True)
class Task:
    id: str
    instruction: str
    tests: str | None = None  # Python source: asserts and/or test_* functions
    entry_point: str | None = None  # the function HumanEval-style `check(candidate)` receives

    @classmethod
    def coerce(cls, value: Any) -> Task:
        """Accept a Task, an instruction string, or a dict with at least `instruction`."""
        if isinstance(value, Task):
            return value
        if isinstance(value, str):
            return cls(id="task", instruction=_check_instruction(value))
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise TaskError(
            f"cannot use a {type(value).__name__} as a task: pass a string or a dict with 'instruction'"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, default_id: str = "task") -> Task:
        instruction = data.get("instruction", data.get("prompt"))
        if not isinstance(instruction, str):
            raise TaskError("missing 'instruction': each task needs an instruction string")
        tests = data.get("tests", data.get("test"))
        if isinstance(tests, list):
            tests = "\n".join(str(t) for t in tests)
        if tests is not None and not isinstance(tests, str):
            raise TaskError("'tests' must be Python source (a string) or a list of assert lines")
        return cls(
            id=str(data.get("id", data.get("task_id", default_id))),
            instruction=_check_instruction(instruction),
            tests=tests,
            entry_point=data.get("entry_point"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_instruction(text: str) -> str:
    if not text.strip():
        raise TaskError("the instruction is empty: say what the code should do")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise TaskError(
            f"the instruction is {len(text):,} characters; the limit is {MAX_INSTRUCTION_CHARS:,}"
        )
    return text


def read_jsonl_tasks(path: Path) -> Iterator[Task | TaskError]:
    """Tasks from a JSONL file; a bad line yields a TaskError naming its line number (the run goes on)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise TaskError(f"cannot read prompt file {path}: {exc.strerror or exc}") from exc
    with handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
                if not isinstance(data, dict):
                    raise TaskError("expected a JSON object")
                yield Task.from_dict(data, default_id=f"line{lineno}")
            except UnicodeDecodeError:
                yield TaskError(f"{path}:{lineno}: not UTF-8 text")
            except json.JSONDecodeError as exc:
                yield TaskError(f"{path}:{lineno}: bad JSON ({exc.msg})")
            except TaskError as exc:
                yield TaskError(f"{path}:{lineno}: {exc}")
