"""The run server, part 5 of 7: the forked processes that run user code: a one-shot run, a
stateful session, and the *subject* of a test run (see proxy.py). Joined after ``remote.py``;
see ``main.py``."""

import atexit
import contextlib
import fcntl
import io
import json
import linecache
import os
import resource
import signal
import socket
import sys
import traceback
import types

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.base import (
    MAIN_NAME,
    MEM_BYTES,
    NPROC,
    SOLUTION_NAME,
    WORK,
    _exit_code,
)
from ragcoder.sandbox.server.remote import Bridge

# ---

_CATCHABLE = [s for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP)]


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


def _oom_first(score):
    """Make this process the OOM killer's choice before the server (1000 = first)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError:
        pass


def _default_signals():
    for sig in _CATCHABLE:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _std_streams():
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8", errors="backslashreplace"
    )
    sys.stdout.reconfigure(write_through=True)
    sys.stderr.reconfigure(write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _child_setup():
    """In a fresh child, once fds 0-3 are in place: limits, signals, streams, work folder."""
    os.chdir(WORK)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if MEM_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (MEM_BYTES, MEM_BYTES))
    if NPROC:
        resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
    _default_signals()
    _std_streams()
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
        os.write(mem, text.encode("utf-8", "surrogatepass"))
        os.lseek(mem, 0, os.SEEK_SET)
    else:
        mem = os.open(os.devnull, os.O_RDONLY)
    os.dup2(mem, 0)
    os.close(mem)


def execute(code, namespace, filename=MAIN_NAME):
    """Run ``code`` in ``namespace``; report an uncaught error on stderr and fd 3. Returns the status.

    The error frame on fd 3 is data about the user's own run (the process can write anything
    there); how the run ended is what the server reads from waitpid."""
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        exec(compile(code, filename, "exec"), namespace)
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


def _flush_and_detach():
    """Flush, then point 0-2 at /dev/null: a session keeps running and its later writes go nowhere."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


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


def child_main(ctrl_r, out_w, err_w, info_w, judge, with_subject=False):
    """The pre-forked child: set up, wait for its job on fd 4, then run it: one-shot code, or
    ``judge(job, subject)`` for a test run; never returns. ``with_subject``: fork the subject of a
    test run now, between runs (the server asks when the last run was a test run); a one-shot
    run stops and reaps it before its code starts."""
    try:
        os.setsid()
        _place_fds([os.open(os.devnull, os.O_RDONLY), out_w, err_w, info_w, ctrl_r])
        _close_fds_from(5)  # the server's channel and every other descriptor are gone
        _child_setup()
        subject = spawn_subject() if with_subject else None
        with os.fdopen(4, "rb") as ctrl:
            data = ctrl.read()  # the job, then EOF
        if not data:
            os._exit(0)  # the server dropped this child unused
        job = json.loads(data.decode("utf-8", "surrogatepass"))
        if job.get("mode") == "test":
            judge(job, subject)
        if subject is not None:
            _drop_subject(*subject)
        _oom_first(1000)
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
    _flush_and_detach()
    os._exit(status)


def spawn_subject():
    """Fork the subject of a test run: it waits for the judge's "load" (the code), then answers
    the judge's requests over a socketpair. Returns (pid, the judge's end). It holds only
    /dev/null, the run's stdout and stderr, and its end of the socket: the judge's verdict
    channel and the server's job pipe are closed before any user code runs."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            _place_fds([os.open(os.devnull, os.O_RDONLY), 1, 2, child.detach()])
            _close_fds_from(4)
            _oom_first(1000)
            _default_signals()
            _std_streams()
            if WORK not in sys.path:
                sys.path.insert(0, WORK)
            with contextlib.suppress(OSError):
                os.chdir(WORK)
            bridge = Bridge(3, trusted=False, namespace=_fresh_main())
            bridge.loader = load_solution
        except BaseException as exc:
            _fail_setup(exc)
        bridge.serve_forever()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(0)
    child.close()
    return pid, parent.detach()


def _drop_subject(pid, fd):
    """Stop and reap a subject that will not be used (before a one-shot run's code starts)."""
    os.close(fd)
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


_DEFINITIONS = (types.FunctionType, types.BuiltinFunctionType, type, types.ModuleType)


def load_solution(code, namespace):
    """The subject's answer to "load": run the user's code as ``solution.py``; answer with its
    definitions (functions, classes, modules by name) so the judge need not ask for each."""
    linecache.cache[SOLUTION_NAME] = (len(code), None, code.splitlines(True), SOLUTION_NAME)
    exec(compile(code, SOLUTION_NAME, "exec"), namespace)
    return {
        name: value
        for name, value in namespace.items()
        if isinstance(name, str) and not name.startswith("__") and isinstance(value, _DEFINITIONS)
    }


def session_main(sock_fd):
    """A stateful session: one namespace kept across runs. Each job arrives on the unix socket
    ``sock_fd`` with its own stdout, stderr and report pipes (SCM_RIGHTS); never returns.

    The session process is the user's own interpreter: it reports each run's end itself, so a
    session's exit status is what its code says. Sessions serve chat, never test verdicts."""
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        _place_fds([null, os.dup(null), os.dup(null), os.dup(null), sock_fd])
        _close_fds_from(5)
        _child_setup()
        _oom_first(1000)
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
            job = json.loads(data.decode("utf-8", "surrogatepass"))
            _place_fds([os.open(os.devnull, os.O_RDONLY), *fds])
            _set_stdin(job.get("stdin"))
        except BaseException as exc:
            _fail_setup(exc)
        status = execute(job["code"], namespace)
        _flush_and_detach()
        with contextlib.suppress(OSError):
            os.write(3, json.dumps({"kind": "exit", "status": status}).encode("utf-8") + b"\n")
            os.close(3)
