"""The run server: stdlib only, started inside the sandbox as ``python3 -I -c <this source> <config>``.

It reads length-prefixed JSON requests on stdin and answers on stdout (4-byte big-endian length,
then UTF-8 JSON). For each ``run`` it forks a fresh child of itself (no interpreter start-up to
pay), which gets new stdin/stdout/stderr pipes, every other descriptor closed, its own session,
and runs the code as a fresh ``__main__`` in the work folder. Afterwards the server kills every
process the run left behind and wipes the writable folders, so each run starts clean.

The server never imports ``random`` or ``tempfile`` (children would share the random state) and
never runs user code itself. It makes itself non-dumpable so a child (same uid) can neither
ptrace it nor open ``/proc/1/fd/*``; as PID 1 of a PID namespace it ignores the signals a child
may send it (no handlers are installed).

``session_run`` runs code in one long-lived forked child instead, whose namespace survives
between calls (each call passes it fresh output pipes over a unix socket). A worker that served
a session is never reused for plain runs: the host kills it when the session ends.

Config (argv[1], JSON): work (folder), wipe (folders emptied after each run), own_pidns (kill
every other process after a run), mem_bytes (RLIMIT_AS for children, 0 = none), cgroup_oom
(path of memory.oom_control to detect OOM kills).

The program is ``base.py`` + ``child.py`` + this file (``main.py``), joined by
:func:`ragcoder.sandbox.workers.server_source`. Each part imports the names it takes from earlier parts
between ``# ---`` markers, so linters and editors see them; the join drops those lines.
"""

import contextlib
import json
import os
import select
import signal
import sys
import time

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.base import (
    _no_dump,
    collect_files,
    kill_leftovers,
    oom_kills,
    read_msg,
    reap_all,
    wipe,
    work_stamps,
    write_files,
    write_msg,
)
from ragcoder.sandbox.server.child import (
    child_main,
    session_main,
)

# ---


def _info_messages(buf):
    out = []
    for line in bytes(buf).split(b"\n"):
        try:
            msg = json.loads(line.decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(msg, dict):
            out.append(msg)
    return out


def _reported_exit(buf):
    for msg in _info_messages(buf):
        if msg.get("kind") == "exit" and isinstance(msg.get("status"), int):
            return msg["status"]
    return None


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


def fork_child():
    """Fork a child that sets itself up and waits for its code: forking happens between runs."""
    ctrl_r, ctrl_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    info_r, info_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        child_main(ctrl_r, out_w, err_w, info_w)
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
    """Between runs: kill what the run left, wipe the writable folders, pre-fork the next child."""
    global _NEXT_CHILD
    if _NEXT_CHILD is not None:  # not used (the run was refused): replace it too
        discard_child(_NEXT_CHILD)
        _NEXT_CHILD = None
    kill_leftovers(pid)
    wipe()
    _NEXT_CHILD = fork_child()


def run(req):
    limit = int(req.get("output_limit", 65536))
    timeout = float(req.get("timeout", 10.0))
    try:
        stamps = write_files(req.get("files"))
    except (OSError, ValueError) as exc:
        return {"ok": False, "problem": "could not write input files: " + str(exc)}
    started = time.monotonic()
    child = take_child()
    job = json.dumps({"code": req["code"], "stdin": req.get("stdin")}).encode("utf-8")
    try:
        _write_all(child[1], job)
    except OSError:  # the idle child died (killed from outside?): use a fresh one
        discard_child(child)
        child = take_child()
        _write_all(child[1], job)
    pid, ctrl_w, out_r, err_r, info_r = child
    os.close(ctrl_w)
    answer = collect(pid, out_r, err_r, info_r, started, timeout, limit)
    answer["files_skipped"] = {}
    answer["files"] = collect_files(stamps, answer["files_skipped"])
    return answer


_SESSION = None  # (pid, socket) of the stateful session child, once started


def session_run(req):
    """Run in the session child: variables survive between calls; /work is not wiped."""
    global _SESSION
    import socket

    limit = int(req.get("output_limit", 65536))
    timeout = float(req.get("timeout", 10.0))
    stamps = work_stamps()  # files from earlier session runs come back only when changed
    try:
        stamps.update(write_files(req.get("files")))
    except (OSError, ValueError) as exc:
        return {"ok": False, "problem": "could not write input files: " + str(exc)}
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
    job = json.dumps({"code": req["code"], "stdin": req.get("stdin")}).encode("utf-8")
    try:
        socket.send_fds(sock, [len(job).to_bytes(8, "big")], [out_w, err_w, info_w])
        sock.sendall(job)
    except OSError:
        pass  # the session died: collect() sees its exit
    for fd in (out_w, err_w, info_w):
        os.close(fd)
    answer = collect(pid, out_r, err_r, info_r, started, timeout, limit, session=True)
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


def collect(pid, out_r, err_r, info_r, started, timeout, limit, session=False):
    """Gather a run's output until it reports its end (or exits, or the deadline passes)."""
    bufs = {out_r: bytearray(), err_r: bytearray(), info_r: bytearray()}
    totals = {out_r: 0, err_r: 0, info_r: 0}
    caps = {out_r: limit, err_r: limit, info_r: 65536}
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
    reported = None  # the exit status the child reported
    while status is None:
        reported = _reported_exit(bufs[info_r])
        if reported is not None and (session or not open_fds):
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
    error = None
    for msg in _info_messages(bufs[info_r]):
        if msg.get("kind") == "error":
            error = {k: str(msg.get(k, "")) for k in ("name", "value", "traceback")}
    return {
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
        "error": error,
        "child_exited": status is not None,
    }


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
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1: ignored unless sent from outside
    os.umask(0o077)
    _no_dump()
    wipe()
    preload()
    wipe()  # what importing left in /tmp (matplotlib's font cache: already loaded by now)
    after_run(0)
    write_msg({"ok": True, "hello": "ragcoder-server", "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        req = read_msg()
        if req is None:
            return
        op = req.get("op")
        if op == "run":
            try:
                resp = run(req)
            except Exception as exc:
                resp = {"ok": False, "problem": type(exc).__name__ + ": " + str(exc)}
            write_msg(resp)
            after_run(resp.get("pid", 0))  # off the critical path, but before the next request
            continue
        elif op == "session_run":
            try:
                resp = session_run(req)
            except Exception as exc:
                resp = {"ok": False, "problem": type(exc).__name__ + ": " + str(exc)}
            write_msg(resp)
            reap_all()  # a session keeps its processes; the host discards the worker when it ends
            continue
        elif op == "ping":
            resp = {"ok": True, "pong": True}
        elif op == "exit":
            write_msg({"ok": True})
            return
        else:
            resp = {"ok": False, "problem": "unknown op " + repr(op)}
        write_msg(resp)


if __name__ == "__main__":
    main()
