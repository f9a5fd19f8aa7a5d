"""Stateful sessions: runs that share one Python namespace and ``/work`` until reset or closed.

    with sandbox.session() as s:          # any server backend, or an ImageRouter
        s.run("import pandas as pd; df = pd.read_csv('data.csv')", files={"data.csv": raw})
        s.run("print(df.describe())")      # df is still there
        s.reset()                          # a fresh namespace and an empty /work

The run server keeps a session in one long-lived forked child (``session_run``); each session
holds a server of its own, so two sessions never see each other's variables or files. A run that
times out, is OOM-killed or crashes the server resets the session: ``last_reset`` says so.

:class:`Sessions` keeps named sessions for a tool (``RunPythonTool(session_id=...)``): a bounded
number, the least recently used closed first when a new one needs room.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ragcoder.sandbox.base import ExecResult

from ragcoder.errors import SandboxClosed, SandboxError

MAX_SESSIONS = 4  # each holds a server (a container with the Docker backend)


class InnerSession(Protocol):
    last_reset: bool

    def run(
        self,
        code: str,
        *,
        stdin: str | None = ...,
        files: Mapping[str, bytes | str] | None = ...,
        timeout: float | None = ...,
    ) -> ExecResult: ...

    def close(self) -> None: ...


class Session:
    """A stateful session over a backend session opened on first use (and again after a reset).

    ``open_inner`` returns the backend's session (``ServerSandbox.session()``); ``on_close`` frees
    whatever was opened for it; ``annotate`` post-processes each result (the router's one-line
    note on a missing package); ``inputs`` are written into ``/work`` when the session starts.
    """

    def __init__(
        self,
        open_inner: Callable[[], InnerSession],
        *,
        on_close: Callable[[], None] | None = None,
        annotate: Callable[[ExecResult], ExecResult] | None = None,
        inputs: Mapping[str, bytes | str] | None = None,
        image: str = "",
    ) -> None:
        self._open_inner = open_inner
        self._on_close = on_close
        self._annotate = annotate
        self._inputs = dict(inputs or {})
        self._inner: InnerSession | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.image = image  # the image the session runs in ('' when the backend has none)
        self.runs = 0
        self.resets = 0
        self.last_reset = False  # the last run lost the session's earlier state

    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        with self._lock:
            if self._closed:
                raise SandboxClosed("the session is closed", hint="open a new one with sandbox.session()")
            fresh = self._inner is None
            if fresh:
                self._inner = self._open_inner()
            inputs = {**self._inputs, **(files or {})} if fresh else dict(files or {})
            result = self._inner.run(code, stdin=stdin, files=inputs or None, timeout=timeout)
            self.runs += 1
            self.last_reset = bool(self._inner.last_reset)
            if self.last_reset:
                self.resets += 1
                self._restart()
            return self._annotate(result) if self._annotate is not None else result

    def _restart(self) -> None:
        """The backend lost our state: start over (inputs written again on the next run)."""
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()

    def reset(self) -> None:
        """Forget every variable and file; the next run starts from a fresh namespace."""
        with self._lock:
            self._restart()
            self.resets += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._restart()
            if self._on_close is not None:
                self._on_close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(sandbox: Any, inputs: Mapping[str, bytes | str] | None = None) -> Session:
    """A :class:`Session` on ``sandbox``: its own ``session()`` when that already returns one (the
    router), else a wrapper around the backend's (a server sandbox: it holds one pooled server)."""
    if getattr(sandbox, "sessions_are_whole", False):  # the router (routing.py imports this module)
        return sandbox.session(inputs=inputs)
    opener = getattr(sandbox, "session", None)
    if opener is None:
        raise SandboxError(
            f"the {getattr(sandbox, 'name', type(sandbox).__name__)} sandbox keeps no sessions",
            hint="use the docker or local backend",
        )
    return Session(opener, inputs=inputs)  # a new backend session at start and after each reset


class Sessions:
    """Named sessions on one sandbox, for a tool: ``get(id)`` opens on first use."""

    def __init__(self, sandbox: Any, *, max_sessions: int = MAX_SESSIONS) -> None:
        self.sandbox = sandbox
        self.max_sessions = max_sessions
        self._open: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> Session:
        with self._lock:
            session = self._open.get(session_id)
            if session is not None:
                self._open.move_to_end(session_id)
                return session
            while len(self._open) >= self.max_sessions:  # room for one more: close the stalest
                _, oldest = self._open.popitem(last=False)
                oldest.close()
            session = open_session(self.sandbox)
            self._open[session_id] = session
            return session

    def reset(self, session_id: str) -> bool:
        """Reset ``session_id``; False when there was no such session."""
        with self._lock:
            session = self._open.get(session_id)
        if session is None:
            return False
        session.reset()
        return True

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._open

    def close(self) -> None:
        with self._lock:
            sessions = list(self._open.values())
            self._open.clear()
        for session in sessions:
            session.close()
