"""Prompt files in every supported format, detected or named."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from ragcoder.agent.tasks import Task, TaskError, detect_format, read_tasks


def test_plain_text_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "todo.txt"
    path.write_text("Write add(a, b).\n\nWrite sub(a, b)\nthat subtracts.\n\n\n")
    tasks = list(read_tasks(path))
    assert [t.id for t in tasks] == ["todo-1", "todo-2"]
    assert tasks[1].instruction == "Write sub(a, b)\nthat subtracts."


def test_folder_of_files(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("Write b().")
    (tmp_path / "a.txt").write_text("Write a().")
    (tmp_path / "skip.py").write_text("x = 1")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    items = list(read_tasks(tmp_path))
    assert detect_format(tmp_path) == "folder"
    assert [i.id for i in items if isinstance(i, Task)] == ["a", "b"]
    assert any(isinstance(i, TaskError) and "bad.txt: not UTF-8" in str(i) for i in items)


def test_humaneval_style_hides_the_hidden_test(tmp_path: Path) -> None:
    path = tmp_path / "he.jsonl.gz"
    record = {
        "task_id": "X/0",
        "prompt": "def f(x):\n    '''>>> f(1)\n    2\n    '''\n",
        "entry_point": "f",
        "canonical_solution": "    return x + 1\n",
        "test": "def check(c): assert False",
    }
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(record) + "\n")
    assert detect_format(path) == "humaneval"
    [task] = list(read_tasks(path))
    assert task.id == "X/0" and task.entry_point == "f"
    assert task.tests is None and "def f(x)" in task.instruction  # the agent never sees `test`


def test_huge_instruction_is_an_error_record(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "big", "instruction": "x" * 1_000_001}) + "\n")
    [item] = list(read_tasks(path))
    assert isinstance(item, TaskError) and "p.jsonl:1" in str(item) and "limit" in str(item)


def test_wrong_format_for_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="is a folder: use --format folder"):
        read_tasks(tmp_path, "jsonl")
    with pytest.raises(TaskError, match="no such file"):
        read_tasks(tmp_path / "missing.jsonl")
