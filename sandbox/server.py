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
"""

import atexit
import base64
import contextlib
import fcntl
import io
import json
import linecache
import os
import resource
import select
import signal
import sys
import time
import traceback

CONFIG = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
WORK = CONFIG.get("work", "/work")
WIPE = CONFIG.get("wipe", [WORK, "/tmp", "/dev/shm"])
OWN_PIDNS = bool(CONFIG.get("own_pidns", os.getpid() == 1))
MEM_BYTES = int(CONFIG.get("mem_bytes", 0))
NPROC = int(CONFIG.get("nproc", 0))  # RLIMIT_NPROC for children (per user namespace), 0 = none
OOM_CONTROL = CONFIG.get("cgroup_oom", "/sys/fs/cgroup/memory/memory.oom_control")
MAX_FILE_BYTES = int(CONFIG.get("max_file_bytes", 1 << 20))
MAX_FILES = int(CONFIG.get("max_files", 50))
MAIN_NAME = "main.py"

IN = sys.stdin.buffer
OUT = sys.stdout.buffer


def _no_dump():
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def read_msg():
    head = IN.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    return json.loads(IN.read(size).decode("utf-8"))


def write_msg(obj):
    data = json.dumps(obj).encode("utf-8")
    OUT.write(len(data).to_bytes(4, "big") + data)
    OUT.flush()


def oom_kills():
    try:
        with open(OOM_CONTROL) as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def safe_path(name):
    path = os.path.normpath(os.path.join(WORK, name))
    if not path.startswith(WORK.rstrip("/") + "/"):
        raise ValueError("file name outside the work folder: " + name)
    return path


def write_files(files):
    stamps = {}
    for name, b64 in (files or {}).items():
        path = safe_path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(b64))
        st = os.stat(path)
        stamps[path] = (st.st_size, st.st_mtime_ns)
    return stamps


def collect_files(stamps):
    out, total = {}, 0
    for root, dirs, names in os.walk(WORK):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            if stamps.get(path) == (st.st_size, st.st_mtime_ns) or len(out) >= MAX_FILES:
                continue
            if total + st.st_size > MAX_FILE_BYTES:
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_FILE_BYTES - total + 1)
            except OSError:
                continue
            total += len(data)
            out[os.path.relpath(path, WORK)] = base64.b64encode(data).decode("ascii")
    return out


def _other_pids():
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            pids.append(int(entry))
    return pids


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers(pgid):
    if pgid > 0:  # 0 would mean our own process group
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    if not OWN_PIDNS:
        reap_all()
        return
    for _ in range(200):
        pids = _other_pids()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap_all()
        time.sleep(0.001)
    reap_all()


def wipe():
    for top in WIPE:
        try:
            entries = os.listdir(top)
        except OSError:
            continue
        for name in entries:
            _remove(os.path.join(top, name))


def _remove(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            for name in os.listdir(path):
                _remove(os.path.join(path, name))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _close_fds_from(low):
    """Close every descriptor >= low (listing /proc/self/fd: closerange over a huge limit is slow)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(low, 4096)
    for fd in fds:
        if fd >= low:
            with contextlib.suppress(OSError):
                os.close(fd)


def _child_setup():
    """In a fresh child, once fds 0-3 are in place: limits, signals, streams, work folder."""
    os.chdir(WORK)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the OOM killer takes the run, not the server
    except OSError:
        pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if MEM_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (MEM_BYTES, MEM_BYTES))
    if NPROC:
        resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8", errors="backslashreplace"
    )
    sys.stdout.reconfigure(write_through=True)
    sys.stderr.reconfigure(write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.argv = [MAIN_NAME]
    sys.path[0:0] = [WORK]
    atexit._clear()


def _place_fds(fds):
    """dup2 ``fds`` onto 0, 1, 2, ... (via fds above 100, so none is clobbered before it moves)."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)


def _set_stdin(text):
    if text:
        mem = os.memfd_create("stdin")
        os.write(mem, text.encode("utf-8"))
        os.lseek(mem, 0, os.SEEK_SET)
    else:
        mem = os.open(os.devnull, os.O_RDONLY)
    os.dup2(mem, 0)
    os.close(mem)


def execute(code, namespace):
    """Run ``code`` in ``namespace``; report an uncaught error on stderr and fd 3. Returns the status."""
    linecache.cache[MAIN_NAME] = (len(code), None, code.splitlines(True), MAIN_NAME)
    try:
        exec(compile(code, MAIN_NAME, "exec"), namespace)
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except BaseException as exc:
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        if isinstance(exc, SyntaxError):
            tb = None
        try:
            text = "".join(traceback.format_exception(type(exc), exc, tb))
            sys.stderr.write(text)
            info = {
                "kind": "error",
                "name": type(exc).__name__,
                "value": str(exc)[:2000],
                "traceback": text[-4000:],
            }
            os.write(3, json.dumps(info).encode("utf-8") + b"\n")
        except BaseException:
            pass
        return 1


def report_end(status):
    """Flush, close the outputs, then say how the run ended (the server need not wait for exit)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(null, fd)  # a session keeps running: its later writes go nowhere
    os.close(null)
    with contextlib.suppress(OSError):
        os.write(3, json.dumps({"kind": "exit", "status": status}).encode("utf-8") + b"\n")
        os.close(3)


def _fail_setup(exc):
    with contextlib.suppress(BaseException):
        os.write(2, ("sandbox server: child set-up failed: " + repr(exc) + "\n").encode())
    os._exit(70)


def _fresh_main():
    main = type(sys)("__main__")
    main.__file__ = MAIN_NAME
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    return main.__dict__


def child_main(ctrl_r, out_w, err_w, info_w):
    """The pre-forked one-shot child: set up, wait for its code on fd 4, run it; never returns."""
    try:
        os.setsid()
        _place_fds([os.open(os.devnull, os.O_RDONLY), out_w, err_w, info_w, ctrl_r])
        _close_fds_from(5)  # the server's channel and every other descriptor are gone
        _child_setup()
        with os.fdopen(4, "rb") as ctrl:
            data = ctrl.read()  # the job, then EOF
        if not data:
            os._exit(0)  # the server dropped this child unused
        job = json.loads(data.decode("utf-8"))
        _set_stdin(job.get("stdin"))
    except BaseException as exc:
        _fail_setup(exc)
    status = execute(job["code"], _fresh_main())
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException:
        pass
    report_end(status)
    os._exit(status)


def session_main(sock_fd):
    """A stateful session: one namespace kept across runs. Each job arrives on the unix socket
    ``sock_fd`` with its own stdout, stderr and report pipes (SCM_RIGHTS); never returns."""
    import socket

    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        _place_fds([null, os.dup(null), os.dup(null), os.dup(null), sock_fd])
        _close_fds_from(5)
        _child_setup()
        sock = socket.socket(fileno=4)
        namespace = _fresh_main()
    except BaseException as exc:
        _fail_setup(exc)
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, 8, 3)
            if len(head) < 8 or len(fds) != 3:
                os._exit(0)
            size = int.from_bytes(head, "big")
            data = bytearray()
            while len(data) < size:
                chunk = sock.recv(min(1 << 20, size - len(data)))
                if not chunk:
                    os._exit(0)
                data += chunk
            job = json.loads(data.decode("utf-8"))
            _place_fds([os.open(os.devnull, os.O_RDONLY), *fds])
            _set_stdin(job.get("stdin"))
        except BaseException as exc:
            _fail_setup(exc)
        report_end(execute(job["code"], namespace))


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(BaseException):
        sys.stderr.write(str(code) + "\n")
    return 1


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
    answer["files"] = collect_files(stamps)
    return answer


_SESSION = None  # (pid, socket) of the stateful session child, once started


def session_run(req):
    """Run in the session child: variables survive between calls; /work is not wiped."""
    global _SESSION
    import socket

    limit = int(req.get("output_limit", 65536))
    timeout = float(req.get("timeout", 10.0))
    try:
        stamps = write_files(req.get("files"))
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
    answer["files"] = collect_files(stamps)
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


def main():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1: ignored unless sent from outside
    os.umask(0o077)
    _no_dump()
    wipe()
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
