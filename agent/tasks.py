"""A Task (one instruction, with optional tests) and reading them from prompt files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragcoder.errors import TaskError

MAX_INSTRUCTION_CHARS = 100_000


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


FORMATS = ("jsonl", "humaneval", "text", "folder")


def detect_format(path: Path) -> str:
    """jsonl | humaneval | text | folder, from what the input looks like."""
    if path.is_dir():
        return "folder"
    if path.suffix in (".jsonl", ".json", ".gz"):
        return "humaneval" if _looks_like_humaneval(path) else "jsonl"
    return "text"


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    return path.open("rb")


def _looks_like_humaneval(path: Path) -> bool:
    try:
        with _open_text(path) as handle:
            first = handle.readline()
        data = json.loads(first)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "task_id" in data and "prompt" in data and "entry_point" in data


def read_humaneval_tasks(path: Path) -> Iterator[Task | TaskError]:
    """HumanEval-style JSONL: the prompt (signature + docstring) is the instruction.

    The hidden ``test`` is NOT given to the agent: it only sees what a user would write, and turns
    the docstring's examples into visible tests. Scoring with the hidden tests is the eval's job.
    """
    with _open_text(path) as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw.decode("utf-8"))
                yield Task(
                    id=str(data["task_id"]),
                    instruction=_check_instruction(
                        "Complete this Python function. Return the whole function, with its imports.\n\n"
                        + data["prompt"]
                    ),
                    entry_point=data.get("entry_point"),
                )
            except (ValueError, KeyError, UnicodeDecodeError, TaskError) as exc:
                yield TaskError(f"{path}:{lineno}: not a HumanEval task ({type(exc).__name__}: {exc})")


def read_text_tasks(path: Path) -> Iterator[Task | TaskError]:
    """Plain text: one instruction per blank-line-separated paragraph."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        yield TaskError(f"{path}: not UTF-8 text")
        return
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    for number, paragraph in enumerate((p for p in paragraphs if p), 1):
        try:
            yield Task(id=f"{path.stem}-{number}", instruction=_check_instruction(paragraph))
        except TaskError as exc:
            yield TaskError(f"{path}: paragraph {number}: {exc}")


def read_folder_tasks(path: Path) -> Iterator[Task | TaskError]:
    """A folder of .txt/.md files: each file is one instruction, its name the id."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".md") and p.is_file())
    if not files:
        raise TaskError(f"{path} holds no .txt or .md files")
    for file in files:
        try:
            yield Task(id=file.stem, instruction=_check_instruction(file.read_bytes().decode("utf-8")))
        except UnicodeDecodeError:
            yield TaskError(f"{file}: not UTF-8 text")
        except TaskError as exc:
            yield TaskError(f"{file}: {exc}")


def read_tasks(path: Path, fmt: str | None = None) -> Iterator[Task | TaskError]:
    """Tasks from a prompt file or folder in any supported format (detected unless ``fmt`` is given)."""
    if not path.exists():
        raise TaskError(f"cannot read prompt file {path}: no such file or folder")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise TaskError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "folder" and not path.is_dir():
        raise TaskError(f"--format folder needs a folder, and {path} is a file")
    if fmt != "folder" and path.is_dir():
        raise TaskError(f"{path} is a folder: use --format folder (or pass a file)")
    readers = {"jsonl": read_jsonl_tasks, "humaneval": read_humaneval_tasks, "text": read_text_tasks,
               "folder": read_folder_tasks}  # fmt: skip
    return readers[fmt](path)
