"""The run server: stdlib only, started inside the sandbox as ``python3 -I -c <loader> <config>``.

It reads length-prefixed JSON requests on stdin and answers on stdout (4-byte big-endian length,
then UTF-8 JSON). For each ``run`` it hands the code to a child it forked beforehand (no
interpreter start-up to pay), which has new stdin/stdout/stderr pipes, every other descriptor
closed, its own session, and runs the code as a fresh ``__main__`` in the work folder. How the
run ended is what ``waitpid`` says, never what the child writes. A ``test`` run hands the child
the judge's job instead (judge.py): the verdicts come back on the child's fd 3, which the process
running user code never holds. After a test run the next child is forked with its subject (the
process that will load the code) already set up, off the next run's critical path.

After each answer the server cleans up within a time budget (kills every process the run left,
wipes the writable folders, removes SysV and POSIX IPC objects), pre-forks the next child, and
then says ``{"ready": true}``; when the cleanup does not finish in the budget it says
``{"recycle": why}`` and exits, so the host replaces it: a run's leftovers cost its own worker,
never the next task. The host never sends a request before ``ready``.

The server never imports ``random`` or ``tempfile`` (children would share the random state) and
never runs user code itself. It makes itself non-dumpable so a child (same uid) can neither ptrace
it nor open ``/proc/1/fd/*``; as PID 1 of a PID namespace it ignores the signals a child may send
it. With ``seccomp_bpf`` in its config it first stacks that filter on itself (Docker; bubblewrap
loads the same program itself).

``session_run`` runs code in one long-lived forked child instead, whose namespace survives
between calls (each call passes it fresh output pipes over a unix socket). A worker that served
a session is never reused for plain runs: the host kills it when the session ends.

The program is ``base.py``, ``proxy.py``, ``codec.py``, ``remote.py``, ``child.py``, ``judge.py``
and this file, joined in that order by :func:`ragcoder.sandbox.workers.server_source`. Each part imports the names it takes from earlier
parts between ``# ---`` markers, so linters and editors see them; the join drops those lines.
"""

import contextlib
import json
import math
import os
import select
import signal
import sys
import time

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.base import (
    CONFIG,
    MAX_TIMEOUT_S,
    _no_dump,
    clean_up,
    collect_files,
    install_seccomp,
    oom_kills,
    read_msg,
    reap_all,
    seccomp_filters,
    wipe,
    work_stamps,
    write_files,
    write_msg,
)
from ragcoder.sandbox.server.child import (
    _info_messages,
    _reported_exit,
    child_main,
    session_main,
)
from ragcoder.sandbox.server.judge import _verdict, judge_main

# ---

INFO_LIMIT = {"run": 65536, "session_run": 65536, "test": 4 << 20}  # verdicts: a few KB per case at most


def _drain(fd, bufs, totals, caps, open_fds, tails, err_r):
    """Read what is available on ``fd`` now, keeping at most its cap."""
    for _ in range(64):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            open_fds.discard(fd)
            return
        totals[fd] += len(chunk)
        room = caps[fd] - len(bufs[fd])
        if room > 0:
            bufs[fd] += chunk[:room]
        if fd == err_r:
            tails += chunk
            del tails[:-8192]


_NEXT_CHILD = None


_LAST_OP = None  # a worker that ran tests is likely to run tests next: its child comes with a subject


def fork_child():
    """Fork a child that sets itself up and waits for its job: forking happens between runs."""
    ctrl_r, ctrl_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    info_r, info_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child_main(ctrl_r, out_w, err_w, info_w, judge_main, with_subject=_LAST_OP == "test")
    for fd in (ctrl_r, out_w, err_w, info_w):
        os.close(fd)
    return pid, ctrl_w, out_r, err_r, info_r


def take_child():
    global _NEXT_CHILD
    child, _NEXT_CHILD = _NEXT_CHILD, None
    return child or fork_child()


def discard_child(child):
    pid, ctrl_w, out_r, err_r, info_r = child
    for fd in (ctrl_w, out_r, err_r, info_r):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def after_run(pid):
    """Between runs: clean up within the budget, then pre-fork the next child. None when clean."""
    global _NEXT_CHILD
    if _NEXT_CHILD is not None:  # not used (the run was refused): replace it too
        discard_child(_NEXT_CHILD)
        _NEXT_CHILD = None
    problem = clean_up(pid)
    if problem is None:
        _NEXT_CHILD = fork_child()
    return problem


def _limits(req):
    """(timeout, output limit) of a request; ValueError when they are not sane numbers."""
    timeout = req.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
        raise ValueError("timeout must be a finite number of seconds")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT_S:g} s")
    limit = req.get("output_limit", 65536)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("output_limit must be a non-negative int")
    return float(timeout), limit


def run(req, mode):
    """A one-shot run (``mode`` "run") or a test run (``mode`` "test") in the pre-forked child."""
    global _LAST_OP
    _LAST_OP = mode
    try:
        timeout, limit = _limits(req)
        stamps = write_files(req.get("files"))
    except (OSError, ValueError, TypeError) as exc:
        return {"ok": False, "problem": "bad request: " + str(exc)}
    started = time.monotonic()
    child = take_child()
    job = {"mode": mode, "code": req["code"], "stdin": req.get("stdin")}
    if mode == "test":
        job.update(tests=req.get("tests"), entry_point=req.get("entry_point"))
    data = json.dumps(job).encode("utf-8", "surrogatepass")
    try:
        _write_all(child[1], data)
    except OSError:  # the idle child died (killed from outside?): use a fresh one
        discard_child(child)
        child = take_child()
        _write_all(child[1], data)
    pid, ctrl_w, out_r, err_r, info_r = child
    os.close(ctrl_w)
    answer = collect(pid, out_r, err_r, info_r, started, timeout, limit, mode)
    answer["files_skipped"] = {}
    answer["files"] = collect_files(stamps, answer["files_skipped"])
    return answer


_SESSION = None  # (pid, socket) of the stateful session child, once started


def session_run(req):
    """Run in the session child: variables survive between calls; /work is not wiped."""
    global _SESSION
    import socket

    try:
        timeout, limit = _limits(req)
        stamps = work_stamps()  # files from earlier session runs come back only when changed
        stamps.update(write_files(req.get("files")))
    except (OSError, ValueError, TypeError) as exc:
        return {"ok": False, "problem": "bad request: " + str(exc)}
    started = time.monotonic()
    fresh = _SESSION is None
    if fresh:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            parent.close()
            session_main(child.detach())
        child.close()
        _SESSION = (pid, parent)
    pid, sock = _SESSION
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    info_r, info_w = os.pipe()
    job = json.dumps({"code": req["code"], "stdin": req.get("stdin")}).encode("utf-8", "surrogatepass")
    try:
        socket.send_fds(sock, [len(job).to_bytes(8, "big")], [out_w, err_w, info_w])
        sock.sendall(job)
    except OSError:
        pass  # the session died: collect() sees its exit
    for fd in (out_w, err_w, info_w):
        os.close(fd)
    answer = collect(pid, out_r, err_r, info_r, started, timeout, limit, "session_run")
    if answer["timed_out"] or answer.pop("child_exited", False):
        end_session()
        answer["session_reset"] = True  # the next session run starts from a fresh namespace
    answer["session_fresh"] = fresh
    answer["files_skipped"] = {}
    answer["files"] = collect_files(stamps, answer["files_skipped"])
    return answer


def end_session():
    global _SESSION
    if _SESSION is not None:
        pid, sock = _SESSION
        _SESSION = None
        sock.close()
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def collect(pid, out_r, err_r, info_r, started, timeout, limit, mode):
    """Gather a run's output until it ends (or, for a session, reports its end), or the deadline."""
    session = mode == "session_run"
    bufs = {out_r: bytearray(), err_r: bytearray(), info_r: bytearray()}
    totals = {out_r: 0, err_r: 0, info_r: 0}
    caps = {out_r: limit, err_r: limit, info_r: INFO_LIMIT[mode]}
    tails = bytearray()  # last bytes of stderr, to find a traceback when stderr overflows
    open_fds = set(bufs)
    for fd in open_fds:
        os.set_blocking(fd, False)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None  # fall back to polling waitpid
    oom_before = oom_kills()
    deadline = started + timeout
    timed_out = False
    status = None
    reported = None  # a session reports its own end (its process lives on)
    while status is None:
        if session:
            reported = _reported_exit(bufs[info_r])
            if reported is not None:
                break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        watch = list(open_fds) + ([pidfd] if pidfd is not None else [])
        wait_s = min(left, 0.5 if pidfd is not None else 0.002)
        ready, _, _ = select.select(watch, [], [], wait_s)
        for fd in ready:
            if fd != pidfd:
                _drain(fd, bufs, totals, caps, open_fds, tails, err_r)
        if pidfd is None or pidfd in ready:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
    if timed_out:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = None
    for fd in list(open_fds):  # what the child wrote before it ended is still in the pipes
        _drain(fd, bufs, totals, caps, open_fds, tails, err_r)
    if pidfd is not None:
        os.close(pidfd)
    duration_ms = (time.monotonic() - started) * 1000.0
    for fd in (out_r, err_r, info_r):
        os.close(fd)
    oom_after = oom_kills()
    signaled = status is not None and os.WIFSIGNALED(status)
    exit_code = reported
    if status is not None:
        exit_code = -os.WTERMSIG(status) if signaled else os.WEXITSTATUS(status)
    oom = (not timed_out) and oom_before >= 0 and oom_after > oom_before
    if not timed_out and oom_before < 0 and signaled and os.WTERMSIG(status) == signal.SIGKILL:
        oom = True  # no cgroup counter to ask: a SIGKILL we did not send is the OOM killer
    answer = {
        "pid": pid,
        "ok": True,
        "stdout": bufs[out_r].decode("utf-8", "replace"),
        "stdout_total": totals[out_r],
        "stderr": bufs[err_r].decode("utf-8", "replace"),
        "stderr_total": totals[err_r],
        "stderr_tail": tails.decode("utf-8", "replace") if totals[err_r] > limit else "",
        "exit_code": exit_code,
        "timed_out": timed_out,
        "oom_killed": oom,
        "duration_ms": duration_ms,
        "error": None,
        "child_exited": status is not None,
    }
    if mode == "test":
        answer["verdict"] = _verdict(bufs[info_r])
        answer["verdict"]["overflow"] = totals[info_r] > INFO_LIMIT[mode]
    else:
        for msg in _info_messages(bufs[info_r]):
            if msg.get("kind") == "error":
                answer["error"] = {k: str(msg.get(k, ""))[:4000] for k in ("name", "value", "traceback")}
    return answer


def _serve(op, req):
    """Answer one request; after a run, clean up and say ready (or recycle and return False)."""
    try:
        resp = run(req, op) if op in ("run", "test") else session_run(req)
    except Exception as exc:
        resp = {"ok": False, "problem": type(exc).__name__ + ": " + str(exc)}
    write_msg(resp)
    if op == "session_run":
        reap_all()  # a session keeps its processes; the host discards the worker when it ends
        problem = None
    else:
        problem = after_run(resp.get("pid", 0))
    if problem is not None:
        write_msg({"ok": True, "recycle": problem})
        return False
    write_msg({"ok": True, "ready": True})
    return True


def preload():
    """Import the image's heavy packages once, before any fork, so each run finds them loaded
    (RAGCODER_PRELOAD: set only in images that have them, e.g. "numpy,pandas,matplotlib.pyplot").
    Children must not share random state: ``random`` reseeds itself after a fork, numpy's global
    generator is reseeded here. A package that fails to import is left to the run to report."""
    names = [n for n in os.environ.get("RAGCODER_PRELOAD", "").split(",") if n.strip()]
    for name in names:
        try:
            __import__(name.strip())
        except Exception as exc:
            sys.stderr.write("sandbox server: could not preload " + name + ": " + repr(exc) + "\n")

    def reseed():
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:
            np_random.seed()

    if names:
        os.register_at_fork(after_in_child=reseed)


def main():
    if CONFIG.get("seccomp_bpf"):
        install_seccomp(CONFIG["seccomp_bpf"])  # first, before anything a run could influence
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1: ignored unless sent from outside
    os.umask(0o077)
    _no_dump()
    wipe(time.monotonic() + 5.0)
    preload()
    wipe(time.monotonic() + 5.0)  # what importing left in /tmp (matplotlib's font cache: loaded by now)
    after_run(0)
    write_msg(
        {
            "ok": True,
            "hello": "ragcoder-server",
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "seccomp_filters": seccomp_filters(),
        }
    )
    while True:
        req = read_msg()
        if req is None:
            return
        op = req.get("op")
        if op in ("run", "test", "session_run"):
            if not _serve(op, req):
                return
            continue
        if op == "ping":
            resp = {"ok": True, "pong": True}
        elif op == "exit":
            write_msg({"ok": True})
            return
        else:
            resp = {"ok": False, "problem": "unknown op " + repr(op)}
        write_msg(resp)


if __name__ == "__main__":
    main()  # workers.judge_program swaps this line for judge_standalone()
