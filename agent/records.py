"""Result files: one JSON object per line, each appended whole (flushed, fsync'd) as its task ends.

A rerun with the same file reads the ids already there and skips them, so nothing finished is lost
or repeated; a torn last line (a run killed mid-write) is cut off before anything is appended.
Batch runs (``ragcoder.agent.batch``) and evaluations (``ragcoder.finetune.evaluate``) both write
through :class:`ResultsFile`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO


def parse_records(data: bytes, key: str = "id") -> list[dict[str, Any]]:
    """Every complete JSON object with ``key`` in ``data``; broken lines (a torn tail) are skipped."""
    records: list[dict[str, Any]] = []
    for raw in data.splitlines():
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and key in record:
            records.append(record)
    return records


def read_records(path: Path, key: str = "id") -> list[dict[str, Any]]:
    """The records of a results file (see :func:`parse_records`); a missing file has none."""
    try:
        return parse_records(path.read_bytes(), key)
    except FileNotFoundError:
        return []


def done_ids(path: Path) -> set[str]:
    """Ids already recorded in ``path``."""
    return {str(record["id"]) for record in read_records(path)}


def to_json_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class ResultsFile:
    """A results file open for appending: torn tail repaired, the ids already done read.

    Use as a context manager; :meth:`append` writes one whole line and fsyncs it, so a crash or
    Ctrl-C at any moment leaves every finished record on disk.
    """

    def __init__(self, path: Path, handle: BinaryIO, done: set[str]) -> None:
        self.path = path
        self.done = done
        self._handle = handle

    @classmethod
    def open(cls, path: Path, *, fresh: bool = False) -> ResultsFile:
        """Open (creating folders as needed) ``path``; ``fresh`` empties it first instead of resuming."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+b")
        try:
            if fresh:
                handle.truncate(0)
            handle.seek(0)
            data = handle.read()
            if data and not data.endswith(b"\n"):  # killed mid-line: cut the partial line off
                data = data[: data.rfind(b"\n") + 1]
                handle.truncate(len(data))
            done = {str(record["id"]) for record in parse_records(data)}
        except BaseException:
            handle.close()
            raise
        return cls(path, handle, done)

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(to_json_line(record))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(str(record["id"]))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
