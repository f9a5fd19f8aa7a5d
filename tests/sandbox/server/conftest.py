"""The in-sandbox server, driven directly: a plain subprocess speaking its protocol.

No isolation here (the server runs as this user, in a temporary work folder): these tests run our
own programs to check the server's behaviour (framing, runs, verdicts, cleanup, exit codes). The
hostile programs run against the real backends in ``tests/sandbox/test_sandbox_redteam*.py``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ragcoder.sandbox.workers import encode, server_command, source_message


class ServerProcess:
    """One run server in a subprocess; ``request`` sends a message and returns the answer."""

    def __init__(self, work: Path, **config: Any) -> None:
        self.work = work
        # A work folder on disk, on a shared machine: cleaning up takes longer than in a tmpfs.
        cfg = {"work": str(work), "wipe": [str(work)], "own_pidns": False, "cleanup_budget_s": 10.0, **config}
        self.proc = subprocess.Popen(
            server_command(sys.executable, cfg),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work,
            start_new_session=True,
        )
        self._buf = b""
        self.send_raw(source_message())
        self.hello = self.read(10)

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the server")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise EOFError("the server exited: " + self.stderr())
                self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read(self, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        size = int.from_bytes(self._read_exact(4, deadline), "big")
        return json.loads(self._read_exact(size, deadline))

    def request(self, msg: dict[str, Any], timeout_s: float = 30) -> dict[str, Any]:
        """Send ``msg``; for runs, also read the after-run word into ``self.after``."""
        self.send_raw(encode(msg))
        answer = self.read(timeout_s)
        if msg.get("op") in ("run", "test", "session_run"):
            self.after = self.read(timeout_s)
        return answer

    def run(self, code: str, **fields: Any) -> dict[str, Any]:
        return self.request({"op": "run", "code": code, "timeout": 10, **fields})

    def test(
        self, code: str, tests: str | list[str], entry_point: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        tests = [tests] if isinstance(tests, str) else tests
        msg = {"op": "test", "code": code, "tests": tests, "entry_point": entry_point, "timeout": 20}
        return self.request({**msg, **fields})

    def stderr(self) -> str:
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode("utf-8", "replace")[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server on its own work folder."""
    work = tmp_path / "work"
    work.mkdir()
    proc = ServerProcess(work)
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module's tests that leave nothing behind (faster than one each)."""
    work = tmp_path_factory.mktemp("server") / "work"
    work.mkdir()
    proc = ServerProcess(work)
    yield proc
    proc.close()
