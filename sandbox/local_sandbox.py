"""Backends for machines without a Docker engine.

``LocalSandbox``: the same run server and warm pool as Docker, each server inside bubblewrap:
new user, PID (server is PID 1), network (only ``lo``), IPC and UTS namespaces; a read-only view
of ``/usr`` only (no ``/home``, ``/root``, ``/etc``, project files); size-capped tmpfs ``/tmp`` and
``/work``; the sandbox's seccomp filter (``sandbox/seccomp.py``, loaded by ``bwrap --seccomp``); as
root, bwrap itself runs as uid 10001 and a per-server cgroup v1 caps memory and pids; otherwise
RLIMIT_AS and RLIMIT_NPROC cap memory and processes. It warns once per process that it is weaker
than Docker (a smaller syscall filter than Docker's default profile, no CPU quota).

``UnsafeLocalSandbox``: the run server as a plain subprocess in a temporary folder. No isolation
at all beyond rlimits; only for explicit ``--unsafe-local`` use, and it says so every time.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ragcoder.sandbox.lifecycle import install_exit_handlers
from ragcoder.sandbox.pool import ServerSandbox
from ragcoder.sandbox.seccomp import build_filter, machine, supported
from ragcoder.sandbox.settings import SANDBOX_UID, SandboxSettings, parse_size
from ragcoder.sandbox.workers import PipeWorker, Worker, server_command

from ragcoder.errors import BackendUnavailable

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")
_warned_weaker = False


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def sandbox_python() -> str:
    """The interpreter the local sandbox runs: the system one under /usr (visible inside)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise BackendUnavailable("no system python3 under /usr for the local sandbox")


class _Cgroup:
    """A cgroup v1 memory + pids group for one server (root only); best effort."""

    def __init__(self, name: str, mem_bytes: int, pids: int) -> None:
        self.dirs: list[Path] = []
        mem = CGROUP_ROOT / "memory" / name
        pid_dir = CGROUP_ROOT / "pids" / name
        try:
            mem.mkdir()
            self.dirs.append(mem)
            (mem / "memory.limit_in_bytes").write_text(str(mem_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():
                (mem / "memory.memsw.limit_in_bytes").write_text(str(mem_bytes))
            pid_dir.mkdir()
            self.dirs.append(pid_dir)
            (pid_dir / "pids.max").write_text(str(pids))
        except OSError as exc:
            self.remove()
            raise BackendUnavailable(f"cannot create cgroup {name}: {exc}") from exc

    def allow(self, uid: int) -> list[str]:
        """Let ``uid`` move its own processes in; returns the cgroup.procs paths to write to."""
        paths = [d / "cgroup.procs" for d in self.dirs]
        for path in paths:
            os.chown(path, uid, -1)
        return [str(p) for p in paths]

    def oom_kills(self) -> int:
        try:
            text = (self.dirs[0] / "memory.oom_control").read_text()
        except (OSError, IndexError):
            return 0
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self, wait_s: float = 3.0) -> None:
        """rmdir the groups, waiting (briefly) for their last processes to be gone."""
        deadline = time.monotonic() + wait_s
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.warning("sandbox: could not remove cgroup %s (processes still in it)", d)
                        break
                    time.sleep(0.01)
        self.dirs = []


def remove_stale_cgroups() -> list[str]:
    """Remove empty ragcoder-<pid>-* cgroups whose owner process is gone (e.g. after SIGKILL)."""
    removed = []
    for controller in ("memory", "pids"):
        for d in (CGROUP_ROOT / controller).glob("ragcoder-*"):
            try:
                owner = int(d.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
                try:
                    d.rmdir()
                    removed.append(str(d))
                except OSError:
                    pass
    return removed


def _filter_pipe() -> int:
    """A pipe holding the seccomp program, for ``bwrap --seccomp FD``; returns its read end."""
    program = build_filter()
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, program)  # about 800 bytes: well under a pipe's buffer
    finally:
        os.close(write_end)
    return read_end


class LocalWorker(PipeWorker):
    def __init__(self, settings: SandboxSettings) -> None:
        bwrap = bwrap_path()
        if bwrap is None:
            raise BackendUnavailable("bubblewrap (bwrap) is not installed")
        root = os.geteuid() == 0
        self.cgroup: _Cgroup | None = None
        if root:
            self.cgroup = _Cgroup(
                f"ragcoder-{os.getpid()}-{uuid.uuid4().hex[:8]}", settings.mem_bytes, settings.pids_limit
            )
        config = settings.server_config(
            work="/work",
            wipe=["/work", "/tmp", "/dev/shm"],
            own_pidns=True,
            ipc_clean=True,  # bwrap gives it its own IPC namespace, and /dev/mqueue below
            mqueue="/dev/mqueue",
            mem_bytes=0 if self.cgroup else settings.mem_bytes,
            # Without a pids cgroup: RLIMIT_NPROC, counted per user namespace (Linux >= 5.14).
            nproc=0 if self.cgroup else settings.pids_limit,
            cgroup_oom="",
        )
        argv = [
            bwrap,
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
        ]
        argv += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        argv += ["--proc", "/proc", "--dev", "/dev", "--mqueue", "/dev/mqueue"]
        argv += ["--size", str(parse_size(settings.tmp_size)), "--tmpfs", "/tmp"]
        argv += ["--size", str(parse_size(settings.work_size)), "--perms", "0700", "--tmpfs", "/work"]
        if self.cgroup is not None:  # lets the server tell an OOM kill from any other SIGKILL
            argv += ["--ro-bind", str(self.cgroup.dirs[0] / "memory.oom_control"), "/run/oom_control"]
            config["cgroup_oom"] = "/run/oom_control"
        argv += ["--remount-ro", "/"]  # bwrap's root is a tmpfs: nothing outside /work and /tmp is writable
        argv += ["--chdir", "/work", "--clearenv", "--setenv", "HOME", "/work", "--setenv", "LANG", "C.UTF-8"]
        popen: dict[str, Any] = {"start_new_session": True}
        filter_fd = None
        if settings.seccomp and supported():
            filter_fd = _filter_pipe()  # bwrap loads it just before it starts the server
            argv += ["--seccomp", str(filter_fd)]
            popen["pass_fds"] = (filter_fd,)
        elif settings.seccomp:
            log.warning("sandbox: no seccomp table for %s: the local sandbox runs without one", machine())
        argv += ["--hostname", "sandbox", *server_command(sandbox_python(), config)]
        if root:
            popen.update(user=SANDBOX_UID, group=SANDBOX_UID, extra_groups=[])
        if self.cgroup is not None:
            # Join the cgroup before bwrap starts, so the server and every run are inside it.
            procs = self.cgroup.allow(SANDBOX_UID)
            join = 'for p in $RAGCODER_CGROUP_PROCS; do echo $$ > "$p" || exit 97; done; exec "$@"'
            argv = ["/bin/sh", "-c", join, "sh", *argv]
            popen["env"] = {"PATH": "/usr/bin:/bin", "RAGCODER_CGROUP_PROCS": " ".join(procs)}
        try:
            super().__init__(
                argv, start_timeout_s=settings.start_timeout_s, seccomp=filter_fd is not None, **popen
            )
        except BaseException:
            if self.cgroup:
                self.cgroup.remove()
            raise
        finally:
            if filter_fd is not None:
                os.close(filter_fd)

    def died_of_oom(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def kill(self) -> None:
        super().kill()
        if getattr(self, "cgroup", None) is not None:
            self.cgroup.remove()  # type: ignore[union-attr]


class LocalSandbox(ServerSandbox):
    """Namespace-isolated (bubblewrap) warm pool for machines with no Docker engine."""

    name = "local"

    def __init__(
        self, settings: SandboxSettings | None = None, *, because: str | None = None, **overrides: Any
    ) -> None:
        """``because``: why Docker was not used (``open_sandbox("auto")`` says; an explicit choice does not)."""
        global _warned_weaker
        if bwrap_path() is None:
            raise BackendUnavailable("bubblewrap (bwrap) is not installed")
        if not _warned_weaker:
            _warned_weaker = True
            why = f"{because}; " if because else ""
            log.warning(
                f"sandbox: {why}using the local bubblewrap sandbox, which is weaker than Docker "
                "(shared kernel, no CPU quota). Use the Docker sandbox for full isolation."
            )
        install_exit_handlers()
        if os.geteuid() == 0:
            remove_stale_cgroups()
        super().__init__(settings, **overrides)

    def _make_worker(self) -> Worker:
        return LocalWorker(self.settings)


class UnsafeWorker(PipeWorker):
    def __init__(self, settings: SandboxSettings) -> None:
        self.tmp = tempfile.mkdtemp(prefix="ragcoder-unsafe-")
        work = os.path.join(self.tmp, "work")
        os.mkdir(work)
        config = settings.server_config(
            work=work,
            wipe=[work],
            own_pidns=False,
            ipc_clean=False,
            mem_bytes=settings.mem_bytes,
            cgroup_oom="",
        )
        argv = server_command(sys.executable, config)
        try:
            super().__init__(argv, start_timeout_s=settings.start_timeout_s, cwd=work, start_new_session=True)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def kill(self) -> None:
        super().kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


class UnsafeLocalSandbox(ServerSandbox):
    """Plain subprocesses: NO isolation (host files, network, env are all reachable)."""

    name = "unsafe-local"

    def __init__(self, settings: SandboxSettings | None = None, **overrides: Any) -> None:
        log.warning(
            "sandbox: UNSAFE local backend: generated code runs as a plain subprocess with full access to "
            "this machine's files and network. Use only with code you trust."
        )
        install_exit_handlers()
        super().__init__(settings, **overrides)

    def _make_worker(self) -> Worker:
        return UnsafeWorker(self.settings)
