"""A Task (one instruction, with optional tests) and reading them from prompt files."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ragcoder.errors import TaskError

MAX_INSTRUCTION_CHARS = 16_000  # ~4k tokens: a long spec, with room left for docs, code and feedback
MAX_TESTS_BYTES = 1 << 20  # a tests file of asserts is kilobytes; a megabyte is the wrong file
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with bytes that were not UTF-8 (lone surrogates, as Python decodes them from argv,
    stdin or file names) replaced by U+FFFD: tokenizers and JSON writers refuse them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text)
    return text


@dataclass(frozen=True)
class Task:
    id: str
    instruction: str
    tests: str | None = None  # Python source: asserts and/or test_* functions
    entry_point: str | None = None  # the function HumanEval-style `check(candidate)` receives
    # where it was read ("p.jsonl:3"), for messages; not part of the task's identity
    origin: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        """Every task, however made, has a non-empty instruction of valid text (the length limit is
        a setting: ``check_instruction``)."""
        if not isinstance(self.instruction, str):
            raise TaskError(f"the instruction must be text, not {type(self.instruction).__name__}")
        if not self.instruction.strip():
            raise TaskError("the instruction is empty: say what the code should do")
        if self.tests is not None and not isinstance(self.tests, str):
            raise TaskError(f"the tests must be Python source (text), not {type(self.tests).__name__}")
        object.__setattr__(self, "instruction", clean_text(self.instruction))
        if self.tests is not None:
            object.__setattr__(self, "tests", clean_text(self.tests))

    @classmethod
    def coerce(cls, value: Any) -> Task:
        """Accept a Task, an instruction string, or a dict with at least `instruction`."""
        if isinstance(value, Task):
            return value
        if isinstance(value, str):
            return cls(id="task", instruction=check_instruction(value))
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise TaskError(
            f"cannot use a {type(value).__name__} as a task: pass a string or a dict with 'instruction'"
        )

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, default_id: str = "task", max_chars: int = MAX_INSTRUCTION_CHARS
    ) -> Task:
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
            instruction=check_instruction(instruction, max_chars),
            tests=tests,
            entry_point=data.get("entry_point"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "origin"}


def check_instruction(text: str, limit: int = MAX_INSTRUCTION_CHARS) -> str:
    """``text`` if it can be an instruction: not empty, at most ``limit`` characters."""
    if not text.strip():
        raise TaskError("the instruction is empty: say what the code should do")
    if len(text) > limit:
        raise TaskError(
            f"the instruction is {len(text):,} characters; the limit is {limit:,} "
            "(setting max_instruction_chars): shorten it or raise the limit"
        )
    return text


def read_tests(spec: str | None) -> str | None:
    """The tests a user gave: Python source, or ``@FILE`` to read them from a UTF-8 text file."""
    if spec is None:
        return None
    if not spec.startswith("@"):
        if not spec.strip():
            raise TaskError("the tests are empty: give Python asserts, or leave tests out")
        return spec
    path = Path(spec[1:]).expanduser()
    if not spec[1:]:
        raise TaskError("@ names no tests file: write @FILE, e.g. @tests.py")
    if not path.exists():
        raise TaskError(f"tests file {path}: no such file")
    if path.is_dir():
        raise TaskError(f"tests file {path} is a folder: give one file of Python asserts")
    if not path.is_file():
        raise TaskError(f"tests file {path} is not a regular file: give one file of Python asserts")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TESTS_BYTES + 1)
    except OSError as exc:
        raise TaskError(f"cannot read tests file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_TESTS_BYTES:
        raise TaskError(
            f"tests file {path} is over {MAX_TESTS_BYTES >> 20} MiB: give a file of Python asserts"
        )
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise TaskError(f"tests file {path} is not UTF-8 text (binary?): give a file of Python asserts")
    if not text.strip():
        raise TaskError(f"tests file {path} is empty: give Python asserts")
    return text


def read_jsonl_tasks(path: Path, max_chars: int = MAX_INSTRUCTION_CHARS) -> Iterator[Task | TaskError]:
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
                task = Task.from_dict(data, default_id=f"line{lineno}", max_chars=max_chars)
                yield replace(task, origin=f"{path}:{lineno}")
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


def read_humaneval_tasks(path: Path, max_chars: int = MAX_INSTRUCTION_CHARS) -> Iterator[Task | TaskError]:
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
                task = humaneval_task(
                    str(data["task_id"]), data["prompt"], data.get("entry_point"), max_chars
                )
                yield replace(task, origin=f"{path}:{lineno}")
            except (ValueError, KeyError, UnicodeDecodeError, TaskError) as exc:
                yield TaskError(f"{path}:{lineno}: not a HumanEval task ({type(exc).__name__}: {exc})")


def humaneval_task(
    task_id: str, prompt: str, entry_point: str | None, max_chars: int = MAX_INSTRUCTION_CHARS
) -> Task:
    """The agent's view of a HumanEval problem: its prompt (signature + docstring), never its tests."""
    instruction = "Complete this Python function. Return the whole function, with its imports.\n\n" + prompt
    return Task(id=task_id, instruction=check_instruction(instruction, max_chars), entry_point=entry_point)


def read_text_tasks(path: Path, max_chars: int = MAX_INSTRUCTION_CHARS) -> Iterator[Task | TaskError]:
    """Plain text: one instruction per blank-line-separated paragraph."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        yield TaskError(f"{path}: not UTF-8 text")
        return
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    for number, paragraph in enumerate((p for p in paragraphs if p), 1):
        try:
            yield Task(
                id=f"{path.stem}-{number}",
                instruction=check_instruction(paragraph, max_chars),
                origin=f"{path}: paragraph {number}",
            )
        except TaskError as exc:
            yield TaskError(f"{path}: paragraph {number}: {exc}")


def read_folder_tasks(path: Path, max_chars: int = MAX_INSTRUCTION_CHARS) -> Iterator[Task | TaskError]:
    """A folder of .txt/.md files: each file is one instruction, its name the id."""
    files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".md") and p.is_file())
    if not files:
        raise TaskError(f"{path} holds no .txt or .md files")
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8")
            yield Task(id=file.stem, instruction=check_instruction(text, max_chars), origin=str(file))
        except UnicodeDecodeError:
            yield TaskError(f"{file}: not UTF-8 text")
        except TaskError as exc:
            yield TaskError(f"{file}: {exc}")


def read_tasks(
    path: Path, fmt: str | None = None, max_chars: int = MAX_INSTRUCTION_CHARS
) -> Iterator[Task | TaskError]:
    """Tasks from a prompt file or folder in any supported format (detected unless ``fmt`` is given);
    an instruction over ``max_chars`` characters becomes a TaskError for that task."""
    if not path.exists():
        raise TaskError(f"cannot read prompt file {path}: no such file or folder")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise TaskError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "folder" and not path.is_dir():
        raise TaskError(f"--format folder needs a folder, and {path} is a file")
    if fmt != "folder" and path.is_dir():
        raise TaskError(f"{path} is a folder: use --format folder (or pass a file)")
    readers = {
        "jsonl": read_jsonl_tasks,
        "humaneval": read_humaneval_tasks,
        "text": read_text_tasks,
        "folder": read_folder_tasks,
    }
    return readers[fmt](path, max_chars)
