"""The warm pool and the Sandbox built on it (shared by the Docker and local backends).

``WarmPool`` keeps ``size`` started servers ready. ``acquire`` hands out a live one; after a
run, ``release`` puts it back when the run ended normally, or kills it and starts a replacement
in the background when the run timed out, was OOM-killed or broke the server. The pool never
hands out a worker it knows to be dead.

``ServerSandbox`` turns ``run(code, ...)`` into one request to a pooled server and the answer
into an :class:`~ragcoder.sandbox.base.ExecResult`.
"""

from __future__ import annotations

import base64
import logging
import os
import posixpath
import queue
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragcoder.sandbox.answers import MalformedAnswer, exec_result
from ragcoder.sandbox.base import ErrorInfo, ExecResult, Sandbox, TestReport
from ragcoder.sandbox.harness import report_from_verdict, test_list
from ragcoder.sandbox.settings import SandboxSettings
from ragcoder.sandbox.workers import Worker, WorkerDied, WorkerTimeout, WorkerUnsettled

from ragcoder.errors import SandboxClosed, SandboxCrashed, SandboxError

log = logging.getLogger(__name__)

_LIVE_SANDBOXES: weakref.WeakSet[ServerSandbox] = weakref.WeakSet()


class WarmPool:
    """``size`` ready workers made by ``factory``; dead ones are replaced in the background."""

    def __init__(
        self,
        factory: Callable[[], Worker],
        size: int,
        *,
        acquire_timeout_s: float = 60.0,
        settle_timeout_s: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError("pool_size must be at least 1")
        self._factory = factory
        self.size = size
        self._acquire_timeout_s = acquire_timeout_s
        self._settle_timeout_s = settle_timeout_s
        self._ready: queue.Queue[Worker] = queue.Queue()
        self._all: set[Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._last_error: BaseException | None = None
        self._pending = 0  # spawn requests not yet served
        self.started = 0  # workers started over the pool's life (replacements included)
        # The first worker starts here so that set-up errors (no engine, no image) raise now.
        self._add(self._factory())
        # Later ones start on one long-lived thread: a server started with a parent-death signal
        # (bwrap --die-with-parent) is killed when the *thread* that started it ends.
        self._requests: queue.Queue[bool] = queue.Queue()
        self._spawner = threading.Thread(target=self._spawn_loop, name="ragcoder-pool-spawner", daemon=True)
        self._spawner.start()
        for _ in range(size - 1):
            self._spawn_async()

    def _add(self, worker: Worker) -> None:
        worker.settle_timeout_s = self._settle_timeout_s
        with self._lock:
            if self._closed:
                worker.kill()
                return
            self._all.add(worker)
            self.started += 1
        self._ready.put(worker)

    def _spawn(self) -> None:
        try:
            worker = self._factory()
        except BaseException as exc:
            self._last_error = exc
            log.warning("sandbox: could not start a replacement server: %s", exc)
            return
        self._last_error = None
        self._add(worker)

    def _spawn_loop(self) -> None:
        while self._requests.get():
            if not self._closed:
                self._spawn()
            with self._lock:
                self._pending -= 1

    def _spawn_async(self) -> None:
        with self._lock:
            self._pending += 1
        self._requests.put(True)

    def acquire(self) -> Worker:
        deadline = time.monotonic() + self._acquire_timeout_s
        while True:
            if self._closed:
                raise SandboxClosed("the sandbox is closed", hint="open a new one")
            left = deadline - time.monotonic()
            if left <= 0:
                err = self._last_error
                raise SandboxCrashed(
                    "no sandbox server became ready" + (f": {err}" if err else ""),
                    hint=getattr(err, "hint", "") or "check `ragcoder sandbox status`",
                )
            try:
                worker = self._ready.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self._last_error is not None and self._pending == 0:
                    self._spawn_async()  # the last start failed: try again while we wait
                continue
            if worker.settle_pending and worker.readable_now():
                try:
                    worker.settle()  # its cleanup's word is here: ready, or recycle (then replaced)
                except WorkerDied as exc:
                    log.info("sandbox: replacing a server: %s", exc)
                    self.discard(worker)
                    continue
            if not worker.settle_pending and not worker.idle_ok():  # died while idle (killed from
                worker.dead = True  # outside, OOM, engine restart)
                self.discard(worker)
                continue
            return worker

    def release(self, worker: Worker) -> None:
        if worker.dead or self._closed:
            self.discard(worker)
        else:
            self._ready.put(worker)

    def discard(self, worker: Worker) -> None:
        """Kill ``worker`` and start a replacement in the background."""
        with self._lock:
            known = worker in self._all
            self._all.discard(worker)
        threading.Thread(target=worker.kill, name="ragcoder-pool-kill", daemon=True).start()
        if known and not self._closed:
            self._spawn_async()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        self._requests.put(False)
        self._spawner.join(timeout=60)
        with self._lock:
            workers += list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()


def _check_file_name(name: str) -> str:
    norm = posixpath.normpath(name)
    if not name or norm.startswith(("/", "../")) or norm in (".", ".."):
        raise ValueError(f"file names must be relative paths inside /work, got {name!r}")
    return norm


class ServerSandbox(Sandbox):
    """A Sandbox whose runs go to a warm pool of run servers. Backends supply ``_make_worker``."""

    name = "server"

    def __init__(self, settings: SandboxSettings | None = None, **overrides: Any) -> None:
        base = settings or SandboxSettings()
        self.settings = SandboxSettings.from_kwargs(**{**base.__dict__, **overrides})
        self._closed = False
        self._pool: WarmPool | None = None
        self._pool = WarmPool(
            self._make_worker,
            self.settings.pool_size,
            settle_timeout_s=self.settings.cleanup_budget_s + self.settings.grace_s,
        )
        _LIVE_SANDBOXES.add(self)

    def _make_worker(self) -> Worker:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    @property
    def pool(self) -> WarmPool:
        if self._pool is None or self._closed:
            raise SandboxClosed(f"the {self.name} sandbox is closed", hint="open a new one")
        return self._pool

    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        request = self._build_request("run", code, stdin, files, timeout)  # bad input raises here
        return self._pooled(request)[1]

    def run_tests(
        self,
        code: str,
        tests: str | Sequence[str],
        *,
        entry_point: str | None = None,
        timeout: float | None = None,
        files: Mapping[str, bytes | str] | None = None,
    ) -> TestReport:
        """As :meth:`Sandbox.run_tests`, natively: the server forks the judge, which forks the code's
        process; the verdicts come back on the judge's own pipe (see ``server/judge.py``)."""
        request = self._build_request("test", code, None, files, timeout)
        request.update(tests=test_list(tests), entry_point=None if entry_point is None else str(entry_point))
        answer, result = self._pooled(request)
        return report_from_verdict(result, answer.get("verdict") if answer is not None else None)

    def _pooled(self, request: dict[str, Any]) -> tuple[dict[str, Any] | None, ExecResult]:
        """One request on a pooled worker, which goes back to the pool or is replaced. A worker that
        turns out to be replaced after its last run never read the request: it goes to another."""
        for attempt in range(3):
            worker = self.pool.acquire()
            try:
                answer, result = self._request(worker, request, retryable=attempt < 2)
                break
            except WorkerUnsettled:
                continue
        if answer is not None:
            if answer["timed_out"] or answer["oom_killed"]:
                self.pool.discard(worker)  # the server survived, but the next run gets a fresh one
            else:
                self.pool.release(worker)
        return answer, result

    def session(self) -> SandboxSession:
        """A stateful session (variables kept between runs) on a worker of its own, for a chat loop.
        The worker is discarded, never reused, when the session closes."""
        return SandboxSession(self)

    def _build_request(
        self,
        op: str,
        code: str,
        stdin: str | None,
        files: Mapping[str, bytes | str] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        encoded = {
            _check_file_name(name): base64.b64encode(
                data.encode() if isinstance(data, str) else data
            ).decode()
            for name, data in (files or {}).items()
        }
        return {
            "op": op,
            "code": code,
            "stdin": stdin,
            "files": encoded,
            "timeout": self.settings.check_timeout(timeout),
            "output_limit": self.settings.output_limit,
        }

    def _request(
        self, worker: Worker, request: dict[str, Any], *, retryable: bool = False
    ) -> tuple[dict[str, Any] | None, ExecResult]:
        """Send one run to ``worker``; on any failure the worker is discarded and answer is None.
        ``retryable``: a worker that was still cleaning up and then went away re-raises
        WorkerUnsettled (the run did not start) instead of reporting a crash."""
        timeout_s = request["timeout"]
        started = time.monotonic()
        try:
            answer = worker.request(request, timeout_s + self.settings.grace_s)
        except WorkerUnsettled:
            self.pool.discard(worker)
            if retryable:
                raise
            return None, self._crashed_result(WorkerDied("no sandbox server was ready"), False, started)
        except WorkerTimeout:
            self.pool.discard(worker)
            return None, ExecResult(
                exit_code=None, timed_out=True, duration_ms=(time.monotonic() - started) * 1e3
            )
        except WorkerDied as exc:
            oom = worker.died_of_oom()
            self.pool.discard(worker)
            return None, self._crashed_result(exc, oom, started)
        except BaseException:
            self.pool.discard(worker)  # e.g. KeyboardInterrupt mid-run: the worker is in an unknown state
            raise
        worker.runs += 1
        if not isinstance(answer, dict) or not answer.get("ok"):
            self.pool.discard(worker)
            problem = answer.get("problem") if isinstance(answer, dict) else answer
            raise SandboxError(f"the sandbox server refused the run: {str(problem)[:300]}")
        try:
            return answer, exec_result(answer, self.settings.output_limit)
        except MalformedAnswer as exc:
            worker.dead = True
            self.pool.discard(worker)
            return None, self._crashed_result(exc, False, started)

    def _crashed_result(self, exc: BaseException, oom: bool, started: float) -> ExecResult:
        duration_ms = (time.monotonic() - started) * 1e3
        if oom:
            return ExecResult(exit_code=137, oom_killed=True, duration_ms=duration_ms)
        error = ErrorInfo(
            name="SandboxCrashed",
            value=f"the run broke the sandbox server ({exc}); it was replaced",
            traceback="",
        )
        return ExecResult(exit_code=None, error=error, duration_ms=duration_ms)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _LIVE_SANDBOXES.discard(self)
        if self._pool is not None:
            self._pool.close()

    def __del__(self) -> None:
        try:
            if not self._closed and os.getpid() == getattr(self, "_owner_pid", os.getpid()):
                self.close()
        except Exception:
            pass


class SandboxSession:
    """Runs that share one Python namespace (and /work) until closed. A run that times out, is
    OOM-killed or crashes resets the session: ``last_reset`` is then True and state is gone."""

    def __init__(self, sandbox: ServerSandbox) -> None:
        self._sandbox = sandbox
        self._worker: Worker | None = sandbox.pool.acquire()
        self.last_reset = False
        self.resets = 0

    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        if self._worker is None:
            raise SandboxClosed("the session is closed", hint="open a new one with sandbox.session()")
        request = self._sandbox._build_request("session_run", code, stdin, files, timeout)
        answer, result = self._sandbox._request(self._worker, request)
        self.last_reset = answer is None or bool(answer.get("session_reset")) or result.oom_killed
        if answer is None:  # the worker was discarded: continue on a fresh one
            self._worker = self._sandbox.pool.acquire()
        self.resets += self.last_reset
        return result

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self._sandbox.pool.discard(worker)

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def close_all_sandboxes() -> None:
    """Close every open server sandbox (atexit and signal handlers call this)."""
    for sandbox in list(_LIVE_SANDBOXES):
        try:
            sandbox.close()
        except Exception as exc:  # pragma: no cover - best effort at exit
            log.warning("sandbox: close failed at exit: %s", exc)
