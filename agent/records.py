"""Result files: one JSON object per line, each appended whole (flushed, fsync'd) as its task ends.

A rerun with the same file reads the ids already there and skips them, so nothing finished is lost
or repeated; a torn last line (a run killed mid-write) is cut off before anything is appended.
Batch runs (``ragcoder.agent.batch``) and evaluations (``ragcoder.finetune.evaluate``) both write
through :class:`ResultsFile`, which:

- checks the path before anything slow starts (a folder, a path under a file, a read-only place
  are one-line :class:`ResultsFileError`\\ s);
- holds an exclusive lock while open, so a second run on the same file stops at once
  (:class:`ResultsFileBusy`, naming the other process) instead of doing every task twice;
- makes every string UTF-8-safe before writing (:func:`clean`), so a lone surrogate in an
  exception message or an id cannot stop the run; the same id always cleans the same way, so a
  rerun still finds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ragcoder.agent.tasks import clean_text

from ragcoder.errors import ResultsFileBusy, ResultsFileError


def clean(value: Any) -> Any:
    """``value`` made JSON-safe: strings cleaned as task text is (``tasks.clean_text``: bytes that
    were not UTF-8 become U+FFFD), keys too, containers walked, anything else JSON has no type for
    written as its (cleaned) ``str``."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {clean_text(str(key)): clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return clean_text(str(value))


def to_json_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(clean(record), ensure_ascii=False) + "\n").encode("utf-8")


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


def _shown(path: Path) -> str:
    return clean_text(str(path))


def _make_parent(path: Path, flag: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
        raise ResultsFileError(
            f"{flag} {_shown(path)}: cannot make its folder, {_shown(blocker)} is a file"
        ) from None
    except OSError as exc:
        raise ResultsFileError(
            f"{flag} {_shown(path)}: cannot make its folder ({exc.strerror or exc})"
        ) from None


def _check_not_special(path: Path, flag: str) -> None:
    if path.is_dir():
        raise ResultsFileError(
            f"{flag} {_shown(path)} is a folder: give a file name, e.g. {_shown(path / 'results.jsonl')}"
        )
    if path.exists() and not path.is_file():
        raise ResultsFileError(f"{flag} {_shown(path)} is not a regular file")


def check_writable(path: Path, flag: str) -> None:
    """Fail now, in one line, if ``path`` could not be written later (a folder, a path under a
    file, a read-only place); makes its folder, leaves the file itself as it is."""
    _check_not_special(path, flag)
    _make_parent(path, flag)
    try:
        if path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        else:
            handle, probe = tempfile.mkstemp(prefix=".ragcoder-probe-", dir=path.parent)
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        raise ResultsFileError(f"cannot write {flag} {_shown(path)}: {exc.strerror or exc}") from None


def _lock_holder(handle: BinaryIO) -> int | None:
    """The pid holding a flock on ``handle``'s file, from /proc/locks (None where it cannot be told)."""
    info = os.fstat(handle.fileno())
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():  # "1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234 0 EOF"
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == wanted and parts[4].isdigit():
            return int(parts[4])
    return None


class ResultsFile:
    """A results file open for appending under an exclusive lock: torn tail repaired, done ids read.

    Use as a context manager; :meth:`append` writes one whole line and fsyncs it, so a crash or
    Ctrl-C at any moment leaves every finished record on disk.
    """

    def __init__(self, path: Path, handle: BinaryIO, done: set[str]) -> None:
        self.path = path
        self.done = done
        self._handle = handle

    @classmethod
    def open(cls, path: Path, *, fresh: bool = False, flag: str = "-o") -> ResultsFile:
        """Open ``path`` (making its folder); ``fresh`` empties it first instead of resuming.

        Raises :class:`ResultsFileError` naming ``flag`` for a path that cannot be a results file,
        :class:`ResultsFileBusy` when another process has it open.
        """
        _check_not_special(path, flag)
        _make_parent(path, flag)
        try:
            handle = path.open("a+b")
        except OSError as exc:
            raise ResultsFileError(f"cannot write {flag} {_shown(path)}: {exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced since the check
                raise ResultsFileError(f"{flag} {_shown(path)} is not a regular file")
            _lock(handle, path)
            if fresh:  # under the lock: unlinking instead would let another run keep the old file
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

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write ``record`` as one line, cleaned (:func:`clean`); returns what was written."""
        written = clean(record)
        try:
            self._handle.write(to_json_line(written))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise ResultsFileError(
                f"cannot append to {_shown(self.path)}: {exc.strerror or exc}; the records before are kept"
            ) from None
        self.done.add(str(written["id"]))
        return written

    def close(self) -> None:
        self._handle.close()  # closing releases the lock

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(handle: BinaryIO, path: Path) -> None:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(handle)
        who = f"pid {holder}" if holder is not None else "another process"
        raise ResultsFileBusy(f"{_shown(path)} is being written by another run ({who})") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # a file system without flock (some network mounts): run unlocked rather than not at all


@contextlib.contextmanager
def held(out: Path | ResultsFile) -> Iterator[ResultsFile]:
    """``out`` itself when it is an open results file, else the file at ``out`` opened, and closed after."""
    if isinstance(out, ResultsFile):
        yield out
        return
    with ResultsFile.open(out) as results:
        yield results
