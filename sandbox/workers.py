"""One running run-server (in a container or a local process) and the framed channel to it.

Messages are 4-byte big-endian length + UTF-8 JSON, both ways (see :mod:`ragcoder.sandbox.server.main`).
A worker that times out, dies or answers garbage is *dead*: the pool kills and replaces it.
"""

from __future__ import annotations

import abc
import functools
import json
import os
import re
import select
import subprocess
import time
from importlib import resources
from typing import Any

MAX_MESSAGE_BYTES = 64 << 20  # a sane bound on one answer (outputs and files are capped well below)


SERVER_PARTS = ("base.py", "proxy.py", "codec.py", "remote.py", "child.py", "judge.py", "main.py")
# Each later part imports what it takes from the earlier ones between these markers (for linters
# and readers); in the joined program those names are already defined, so the block is dropped.
_JOIN_IMPORTS = re.compile(
    r"^# --- names from the parts before this one.*?^# ---\n", re.MULTILINE | re.DOTALL
)


@functools.cache
def server_source() -> str:
    """The stdlib-only server program that runs inside every sandbox: its parts, joined."""
    folder = resources.files("ragcoder.sandbox.server")
    parts = [folder.joinpath(name).read_text(encoding="utf-8") for name in SERVER_PARTS]
    return "\n\n".join(_JOIN_IMPORTS.sub("", part) for part in parts)


_ENTRY_LINE = "    main()  # workers.judge_program swaps this line for judge_standalone()\n"


@functools.cache
def judge_program() -> str:
    """The same program with the judge as its entry point, to run as ordinary code in any sandbox
    (``Sandbox.run_tests``'s default; the server backends run tests natively)."""
    source = server_source()
    head, entry, tail = source.rpartition(_ENTRY_LINE)
    if not entry or tail.strip():
        raise RuntimeError("the server program no longer ends with its entry line")
    return head + "    judge_standalone()\n"


# A one-line loader: the server's source arrives first on stdin (length line, then the source),
# which keeps the command line short (ps, docker inspect) and the container config small.
BOOTSTRAP = (
    "import sys;b=sys.stdin.buffer;n=int(b.readline());exec(compile(b.read(n),'ragcoder-server','exec'))"
)


def server_command(python: str, config: dict[str, Any]) -> list[str]:
    return [python, "-I", "-c", BOOTSTRAP, json.dumps(config)]


def source_message() -> bytes:
    source = server_source().encode("utf-8")
    return str(len(source)).encode() + b"\n" + source


class WorkerTimeout(Exception):
    """The server did not answer before the deadline (user code hung it, or it is wedged)."""


class WorkerDied(Exception):
    """The server's channel closed or broke (or the server asked to be replaced)."""


class WorkerUnsettled(WorkerDied):
    """The server ended, or asked to be replaced, while cleaning up after its last run: the request
    sent meanwhile was never read, so it can go to another worker."""


RUN_OPS = ("run", "test", "session_run")  # after these the server cleans up, then says ready


def encode(msg: dict[str, Any]) -> bytes:
    data = json.dumps(msg).encode("utf-8")
    return len(data).to_bytes(4, "big") + data


class Worker(abc.ABC):
    """A started server. ``request`` sends one message and waits for one answer."""

    hello: dict[str, Any]

    def __init__(self) -> None:
        self.dead = False
        self.runs = 0
        self.settle_pending = False  # a run was answered; its cleanup's ready/recycle is due
        self.settle_timeout_s = 5.0  # the server's cleanup budget plus a margin (set by the pool)

    @abc.abstractmethod
    def _send(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _recv_exact(self, n: int, deadline: float) -> bytes:
        """Read exactly ``n`` payload bytes or raise WorkerTimeout/WorkerDied."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the server and free everything it holds. Idempotent, never raises."""

    def died_of_oom(self) -> bool:
        """After WorkerDied: was the whole sandbox OOM-killed?"""
        return False

    def idle_ok(self) -> bool:
        """Cheap check before handing the worker out: an idle server says nothing, so anything
        readable on its channel (EOF included) means it died or went wrong while idle."""
        if self.dead:
            return False
        fileno = self._channel_fileno()
        if fileno is None:
            return True
        readable, _, _ = select.select([fileno], [], [], 0)
        return not readable

    def _channel_fileno(self) -> int | None:
        return None

    def readable_now(self) -> bool:
        """Something (a message, or EOF) can be read without waiting."""
        fileno = self._channel_fileno()
        return fileno is None or bool(select.select([fileno], [], [], 0)[0])

    def settle(self, timeout_s: float | None = None) -> None:
        """Read the server's word after its last run: ``ready``, or ``recycle`` (its cleanup ran over
        budget). Anything but ready makes the worker dead and raises WorkerUnsettled."""
        if not self.settle_pending:
            return
        wait_s = self.settle_timeout_s if timeout_s is None else timeout_s
        try:
            msg = self.read_message(time.monotonic() + wait_s)
        except WorkerTimeout as exc:
            self.dead = True
            raise WorkerUnsettled(f"the server did not finish cleaning up in {wait_s:g} s") from exc
        except (WorkerDied, OSError) as exc:
            self.dead = True
            raise WorkerUnsettled(str(exc)) from exc
        self.settle_pending = False
        if msg.get("ready") is not True:
            self.dead = True
            raise WorkerUnsettled(f"the server asked to be replaced: {str(msg.get('recycle', msg))[:200]}")

    def read_message(self, deadline: float) -> dict[str, Any]:
        size = int.from_bytes(self._recv_exact(4, deadline), "big")
        if size > MAX_MESSAGE_BYTES:
            raise WorkerDied(f"server sent an oversized message ({size} bytes)")
        try:
            return json.loads(self._recv_exact(size, deadline).decode("utf-8"))
        except ValueError as exc:
            raise WorkerDied(f"server sent garbage: {exc}") from exc

    def request(self, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.dead:
            raise WorkerDied("worker is dead")
        try:
            # Sent at once, even while the server still cleans up after its last run: it reads the
            # request after its ready (or never, after recycle), so cleanup and the host overlap.
            self._send(encode(msg))
            self.settle()
            answer = self.read_message(time.monotonic() + timeout_s)
            self.settle_pending = msg.get("op") in RUN_OPS
            return answer
        except (WorkerTimeout, WorkerDied):
            self.dead = True
            raise
        except OSError as exc:
            self.dead = True
            raise WorkerDied(str(exc)) from exc

    def wait_hello(self, timeout_s: float, *, seccomp: bool = False) -> dict[str, Any]:
        """Send the server its source (see BOOTSTRAP) and wait for its hello. With ``seccomp``, a
        server that does not run under a seccomp filter is refused (fail closed)."""
        self._send(source_message())
        self.hello = self.read_message(time.monotonic() + timeout_s)
        if not self.hello.get("hello"):
            raise WorkerDied(f"unexpected first message from server: {self.hello!r:.200}")
        filters = self.hello.get("seccomp_filters")
        if seccomp and not (isinstance(filters, int) and filters >= 1):
            raise WorkerDied(f"the server runs without the sandbox's seccomp filter ({filters!r})")
        return self.hello


class PipeWorker(Worker):
    """A server in a local child process (bubblewrap, or plain subprocess for unsafe-local)."""

    def __init__(
        self, argv: list[str], *, start_timeout_s: float, seccomp: bool = False, **popen: Any
    ) -> None:
        super().__init__()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
        )
        self._out = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self._buf = bytearray()
        try:
            self.wait_hello(start_timeout_s, seccomp=seccomp)
        except BaseException:
            self.kill()
            raise

    def _channel_fileno(self) -> int | None:
        return None if self.proc.poll() is not None or self._buf else self._out

    def idle_ok(self) -> bool:
        return self.proc.poll() is None and not self._buf and super().idle_ok()

    def stderr_tail(self) -> str:
        """The last of what the server printed on stderr, once it has exited (else '')."""
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return ""
        if self.proc.stderr is None:
            return ""
        try:
            return self.proc.stderr.read()[-2000:].decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def _send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError) as exc:
            raise WorkerDied("server's stdin is closed") from exc

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeout("no answer from the server in time")
            ready, _, _ = select.select([self._out], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                tail = self.stderr_tail().strip()
                raise WorkerDied("server exited" + (f": {tail}" if tail else ""))
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def kill(self) -> None:
        self.dead = True
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
