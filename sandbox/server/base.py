"""The run server, part 1 of 3: its configuration, the framed channel, files, and cleaning up
after a run (stdlib only).

The server is one program made of ``base.py``, ``child.py`` and ``main.py`` (this folder), joined
in that order by :func:`ragcoder.sandbox.workers.server_source`; see ``main.py`` for what it does.
"""

import base64
import contextlib
import json
import os
import signal
import sys
import time

CONFIG = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
WORK = CONFIG.get("work", "/work")
WIPE = CONFIG.get("wipe", [WORK, "/tmp", "/dev/shm"])
OWN_PIDNS = bool(CONFIG.get("own_pidns", os.getpid() == 1))
MEM_BYTES = int(CONFIG.get("mem_bytes", 0))
NPROC = int(CONFIG.get("nproc", 0))  # RLIMIT_NPROC for children (per user namespace), 0 = none
OOM_CONTROL = CONFIG.get("cgroup_oom", "/sys/fs/cgroup/memory/memory.oom_control")
MAX_FILE_BYTES = int(CONFIG.get("max_file_bytes", 1 << 20))
MAX_FILES = int(CONFIG.get("max_files", 50))
MAX_ONE_FILE = int(CONFIG.get("max_one_file_bytes", MAX_FILE_BYTES))  # per file, within the total
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


def work_stamps():
    """(size, mtime) of every file already in the work folder: a session's earlier files."""
    stamps = {}
    for root, _, names in os.walk(WORK):
        for name in names:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                stamps[path] = (st.st_size, st.st_mtime_ns)
    return stamps


def collect_files(stamps, skipped=None):
    """New or changed files under the work folder, base64, within the caps; ``skipped`` (a dict)
    receives name -> size of each file left out for a cap."""
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
            if stamps.get(path) == (st.st_size, st.st_mtime_ns):
                continue
            if len(out) >= MAX_FILES or st.st_size > MAX_ONE_FILE or total + st.st_size > MAX_FILE_BYTES:
                if skipped is not None:
                    skipped[os.path.relpath(path, WORK)] = st.st_size
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


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(BaseException):
        sys.stderr.write(str(code) + "\n")
    return 1
