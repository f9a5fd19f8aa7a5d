"""The run server, part 2 of 3: the forked child that runs user code (one-shot or a stateful
session). Joined after ``base.py``; see ``main.py``."""

import atexit
import contextlib
import fcntl
import io
import json
import linecache
import os
import resource
import signal
import sys
import traceback

# --- names from the parts before this one: dropped when the parts are joined (workers.server_source)
from ragcoder.sandbox.server.base import (
    MAIN_NAME,
    MEM_BYTES,
    NPROC,
    WORK,
    _exit_code,
)

# ---


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
