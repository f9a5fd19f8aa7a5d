"""Named chat sessions (``ragcoder chat --session NAME``): the conversation kept on disk, resumed
later; and the chat's file commands, ``/open FILE`` and ``/write [FILE]``.

One JSON file per name under ``<data dir>/chat_sessions/`` (``RAGCODER_DATA_DIR`` moves it), written
after every change through a temporary file and a rename, so a crash never leaves half a session.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcoder.agent.tasks import MAX_TESTS_BYTES
from ragcoder.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ChatSessionStore", "FileCommands", "show_resumed"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FORMAT = 1  # the file's layout; a file of another layout is refused, never misread


@dataclass(frozen=True)
class ChatSessionStore:
    """Where one named session lives: :meth:`load` what was saved, :meth:`save` the current state."""

    name: str
    folder: Path

    @classmethod
    def named(cls, name: str, folder: Path | None = None) -> ChatSessionStore:
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"session name {name!r} is not usable as a file name",
                hint="use letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit",
            )
        if folder is None:
            from ragcoder.chains.paths import data_dir

            folder = data_dir() / "chat_sessions"
        return cls(name, folder)

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.json"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None for a new session."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"chat session file {self.path} cannot be read: {error}",
                hint="move it away to start the session afresh",
            ) from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(
                f"chat session file {self.path} is not a ragcoder session (format {FORMAT})",
                hint="move it away to start the session afresh",
            )
        return data

    def save(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"format": FORMAT, **state}, indent=1), encoding="utf-8")
        partial.replace(self.path)


def show_resumed(console: Console, name: str, messages: list[str], source_file: str, code: str) -> None:
    """What a resumed session holds: its messages and the current code."""
    from rich.syntax import Syntax

    console.print(f"resumed session {name}: {len(messages)} message(s)", highlight=False, markup=False)
    for message in messages:
        console.print(f"  > {message}", highlight=False, markup=False)
    if source_file:
        console.print(f"  (from {source_file})", highlight=False, markup=False)
    if code:
        console.print(Syntax(code.rstrip(), "python"))


class FileCommands:
    """The chat's ``/open`` and ``/write``, and saving to the named session (for ``ChatCommands``,
    which holds ``state``, ``console`` and ``store``)."""

    state: Any
    console: Console
    store: ChatSessionStore | None

    def saved(self) -> None:
        if self.store is not None:
            self.store.save(self.state.to_dict())

    def do_open(self, arg: str) -> None:
        if not arg:
            self.console.print("usage: /open FILE", highlight=False)
            return
        path = Path(shlex.split(arg)[0]).expanduser()
        try:
            if path.stat().st_size > MAX_TESTS_BYTES:
                raise ValueError("it is over 1 MB, not a source file")
            code = path.read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            self.console.print(f"error: cannot open {path}: {exc}", highlight=False, markup=False)
            return
        self.state.code, self.state.source_file = code, str(path)
        self.state.instruction = f"The Python code of {path.name}."
        self.console.print(
            f"opened {path} ({len(code.splitlines())} lines); follow-ups change it, /write saves it back",
            highlight=False,
            markup=False,
        )
        self.saved()

    def do_write(self, arg: str) -> None:
        target = shlex.split(arg)[0] if arg else self.state.source_file
        if not target:
            self.console.print("usage: /write FILE (or /open a file first)", highlight=False)
        elif not self.state.code:
            self.console.print("nothing to write yet", highlight=False)
        else:
            path = Path(target).expanduser()
            try:
                path.write_text(self.state.code, encoding="utf-8")
            except OSError as exc:
                self.console.print(f"error: cannot write {path}: {exc}", highlight=False, markup=False)
                return
            lines = len(self.state.code.splitlines())
            self.console.print(f"wrote {lines} lines to {path}", highlight=False, markup=False)
