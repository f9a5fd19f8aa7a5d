"""Named chat sessions (``ragcoder chat --session NAME``): the conversation kept on disk, resumed later.

One JSON file per name under ``<data dir>/chat_sessions/`` (``RAGCODER_DATA_DIR`` moves it), written
after every change through a temporary file and a rename, so a crash never leaves half a session.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcoder.errors import ConfigError

__all__ = ["ChatSessionStore"]

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
