"""The run server, part 1 of 7: its configuration, the framed channel, files, and cleaning up
after a run within a time budget (stdlib only).

The server is one program made of ``base.py``, ``proxy.py``, ``codec.py``, ``remote.py``,
``child.py``, ``judge.py`` and ``main.py`` (this folder), joined in that order by
:func:`ragcoder.sandbox.workers.server_source`; see ``main.py`` for what it does.
"""

import base64
import contextlib
import json
import os
import signal
import sys
import time

CONFIG = json.loads(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].startswith("{") else {}
WORK = CONFIG.get("work", "/work")
WIPE = CONFIG.get("wipe", [WORK, "/tmp", "/dev/shm"])
OWN_PIDNS = bool(CONFIG.get("own_pidns", os.getpid() == 1))
IPC_CLEAN = bool(CONFIG.get("ipc_clean", False))  # only with an IPC namespace of our own
MQUEUE = CONFIG.get("mqueue", "/dev/mqueue")
MEM_BYTES = int(CONFIG.get("mem_bytes", 0))
NPROC = int(CONFIG.get("nproc", 0))  # RLIMIT_NPROC for children (per user namespace), 0 = none
OOM_CONTROL = CONFIG.get("cgroup_oom", "/sys/fs/cgroup/memory/memory.oom_control")
MAX_FILE_BYTES = int(CONFIG.get("max_file_bytes", 1 << 20))
MAX_FILES = int(CONFIG.get("max_files", 50))
MAX_ONE_FILE = int(CONFIG.get("max_one_file_bytes", MAX_FILE_BYTES))  # per file, within the total
MAX_TIMEOUT_S = float(CONFIG.get("max_timeout_s", 3600.0))
# Cleaning up after a run (kill, wipe, IPC) must finish in this time, else the server asks to be
# replaced: whatever a run leaves behind costs that run's worker, never the next task's time.
CLEANUP_BUDGET_S = float(CONFIG.get("cleanup_budget_s", 0.5))
WALK_BUDGET_S = 0.5  # collecting the files a run wrote: a tree it made cannot hold up the answer
WALK_MAX_ENTRIES = 20_000
WALK_MAX_DEPTH = 32
MAIN_NAME = "main.py"
SOLUTION_NAME = "solution.py"

IN = sys.stdin.buffer
OUT = sys.stdout.buffer


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _no_dump():
    with contextlib.suppress(Exception):
        _libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def install_seccomp(bpf_b64):
    """Stack the sandbox's seccomp filter (built on the host, see sandbox/seccomp.py) on this
    process and everything it will fork. Raises when the kernel refuses: the host then refuses
    the worker (fail closed)."""
    import ctypes

    bpf = base64.b64decode(bpf_b64)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = _libc()
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")


def seccomp_filters():
    """How many seccomp filters this process runs under (from /proc/self/status), -1 if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp_filters:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


def read_msg():
    head = IN.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    return json.loads(IN.read(size).decode("utf-8"))


def write_msg(obj):
    data = json.dumps(obj).encode("utf-8", "surrogatepass")
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


def _walk_work():
    """(path, stat) of each regular file under the work folder, within a time, entry and depth
    budget (iterative: a deep or huge tree made by the run costs it files, never the answer)."""
    seen = 0
    deadline = time.monotonic() + WALK_BUDGET_S
    stack = [(WORK, 0)]
    while stack and time.monotonic() < deadline:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = []
                for entry in it:
                    entries.append(entry)
                    seen += 1
                    if seen >= WALK_MAX_ENTRIES:
                        break
        except OSError:
            continue
        entries.sort(key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < WALK_MAX_DEPTH:
                        subdirs.append((entry.path, depth + 1))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield entry.path, st
        stack.extend(reversed(subdirs))
        if seen >= WALK_MAX_ENTRIES:
            return


def work_stamps():
    """(size, mtime) of every file already in the work folder: a session's earlier files."""
    return {path: (st.st_size, st.st_mtime_ns) for path, st in _walk_work()}


def collect_files(stamps, skipped=None):
    """The files the run wrote or changed in the work folder, base64, within the caps and the walk
    budget; ``skipped`` (a dict) receives name -> size of each file left out for a cap."""
    out, total = {}, 0
    for path, st in _walk_work():
        if stamps.get(path) == (st.st_size, st.st_mtime_ns):
            continue
        name = os.path.relpath(path, WORK)
        if len(out) >= MAX_FILES or st.st_size > MAX_ONE_FILE or total + st.st_size > MAX_FILE_BYTES:
            if skipped is not None and len(skipped) < MAX_FILES:
                skipped[name] = st.st_size
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                data = os.read(fd, MAX_FILE_BYTES - total + 1)
            finally:
                os.close(fd)
        except OSError:
            continue
        total += len(data)
        out[name] = base64.b64encode(data).decode("ascii")
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


def kill_leftovers(pgid, deadline):
    """Kill what the run left (its process group; with our own PID namespace, every process but
    us). False when something still runs at the deadline."""
    if pgid > 0:  # 0 would mean our own process group
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    if not OWN_PIDNS:
        reap_all()
        return True
    while True:
        pids = _other_pids()
        if not pids:
            reap_all()
            return True
        if time.monotonic() > deadline:
            return False
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        reap_all()
        time.sleep(0.001)


def wipe(deadline):
    """Empty every folder in WIPE. False when one could not be emptied before the deadline."""
    clean = True
    for top in WIPE:
        clean = _empty_folder(top, deadline) and clean
    with contextlib.suppress(OSError):
        os.chdir("/")
    return clean


def _enter(name, make_ours=True):
    """chdir into the folder ``name``, never through a symlink; a sub-folder is first made ours to
    list and empty (a run may have left it mode 000). Returns its stat."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY)
    try:
        if make_ours:
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
        os.fchdir(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def _empty_folder(top, deadline):
    """Remove everything under ``top`` (not ``top`` itself). Iterative and one name deep: it walks
    down with fchdir and back up with "..", so depth costs neither recursion, descriptors nor path
    length, and it checks at each step up that it is back where it came from."""
    try:
        here = _enter(top, make_ours=False)  # /tmp and /dev/shm are root's, mode 1777
    except OSError:
        return True  # no such folder here
    trail = []  # (name, parent's stat) from top down to the current folder
    while True:
        if time.monotonic() > deadline:
            return False
        sub, listed, removed = None, 0, 0
        try:
            with os.scandir(".") as it:
                for entry in it:
                    listed += 1
                    if listed % 512 == 0 and time.monotonic() > deadline:
                        return False
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            sub = entry.name
                            break
                        os.unlink(entry.name)
                        removed += 1
                    except OSError:
                        pass
        except OSError:
            return False
        if sub is not None:
            try:
                parent, here = here, _enter(sub)
            except OSError:
                return False
            trail.append((sub, parent))
            continue
        if listed and not removed:
            return False  # something here cannot be removed
        if listed:
            continue  # list again: entries may have been skipped while deleting
        if not trail:
            return True
        name, parent = trail.pop()
        try:
            os.chdir("..")
            here = os.stat(".")
            if (here.st_dev, here.st_ino) != (parent.st_dev, parent.st_ino):
                return False  # the tree moved under us: give up, the worker is recycled
            os.rmdir(name)
        except OSError:
            return False


def _sysv_ids(kind):
    try:
        with open("/proc/sysvipc/" + kind) as f:
            return [int(line.split()[1]) for line in f.readlines()[1:] if line.strip()]
    except (OSError, ValueError, IndexError):
        return []


def clear_ipc():
    """Remove every System V shared memory segment, message queue and semaphore set, and every
    POSIX message queue, in this IPC namespace (every process is dead by now, so a removed
    segment is freed at once). False when one is left."""
    if not IPC_CLEAN:
        return True
    libc = None
    for kind in ("shm", "msg", "sem"):
        for ident in _sysv_ids(kind):
            libc = libc or _libc()
            if kind == "shm":
                libc.shmctl(ident, 0, None)  # IPC_RMID = 0
            elif kind == "msg":
                libc.msgctl(ident, 0, None)
            else:
                libc.semctl(ident, 0, 0)
    try:
        queues = os.listdir(MQUEUE)
    except OSError:
        queues = []
    for name in queues:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(MQUEUE, name))
    try:
        left = os.listdir(MQUEUE)
    except OSError:
        left = []
    return not left and not any(_sysv_ids(kind) for kind in ("shm", "msg", "sem"))


def clean_up(pgid):
    """After a run: kill, wipe, clear IPC, all within the budget. None when clean, else why not."""
    deadline = time.monotonic() + CLEANUP_BUDGET_S
    if not kill_leftovers(pgid, deadline):
        return "processes of the last run survived SIGKILL"
    if not wipe(deadline):
        return "the writable folders could not be emptied within the cleanup budget"
    if not clear_ipc():
        return "IPC objects of the last run could not be removed"
    return None


def _exit_code(exc):
    """The exit status CPython gives ``raise SystemExit(code)``: the low byte of a C long, or 255
    (-1) for an int that does not fit one; the text and status 1 for anything else."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        value = int.__int__(code)  # the int's own value, whatever a subclass's operators say
        return value & 0xFF if -(1 << 63) <= value < (1 << 63) else 255
    with contextlib.suppress(BaseException):
        sys.stderr.write(str(code) + "\n")
    return 1
