"""Lifecycle: the engine connection, labels naming the owning process, reaping orphans, closing
pools at exit.

Containers carry ``ragcoder=1`` plus the owner's host name, pid and process start time. A
container is an orphan when its owner (same host) is no longer running: pid gone, or the pid was
reused by a process with another start time.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
from typing import Any

from ragcoder.sandbox.pool import close_all_sandboxes
from ragcoder.sandbox.settings import LABEL

from ragcoder.errors import EngineUnavailable

log = logging.getLogger(__name__)

_handlers_installed = False
_install_lock = threading.Lock()


def docker_client(timeout_s: float = 10.0, base_url: str | None = None) -> Any:
    """A docker SDK client that answered ping, or EngineUnavailable. ``base_url`` names an engine
    (unix://, tcp://, ssh:// through the ssh command); None: the environment's (DOCKER_HOST)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        raise EngineUnavailable("the `docker` Python package is missing", hint="pip install docker") from exc
    try:
        if base_url is None:
            client = docker.from_env(timeout=int(timeout_s))
        else:
            client = docker.DockerClient(
                base_url=base_url, timeout=int(timeout_s), use_ssh_client=base_url.startswith("ssh://")
            )
        client.ping()
    except (DockerException, OSError) as exc:
        where = f" at {base_url}" if base_url else ""
        raise EngineUnavailable(f"no Docker engine answers{where} ({type(exc).__name__})") from exc
    return client


def process_start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL: "1",
        f"{LABEL}.owner_host": socket.gethostname(),
        f"{LABEL}.owner_pid": str(pid),
        f"{LABEL}.owner_start": process_start_ticks(pid),
    }


def owner_alive(labels: dict[str, str]) -> bool:
    """True when the process that started a container still runs (unknown hosts count as alive)."""
    if labels.get(f"{LABEL}.owner_host") != socket.gethostname():
        return True  # another machine's container: not ours to judge
    try:
        pid = int(labels.get(f"{LABEL}.owner_pid", ""))
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = labels.get(f"{LABEL}.owner_start", "")
    return not start or process_start_ticks(pid) in ("", start)


def reap_orphans(client: Any = None, *, everything: bool = False) -> list[str]:
    """Remove ragcoder containers whose owner is gone (or all of them). Returns their short ids."""
    own = client is None
    client = client or docker_client()
    removed: list[str] = []
    try:
        # The low-level call lists in one request (containers.list inspects each: racy with auto-remove).
        for container in client.api.containers(all=True, filters={"label": f"{LABEL}=1"}):
            short_id = container["Id"][:12]
            if not everything and owner_alive(container.get("Labels") or {}):
                continue
            try:
                client.api.remove_container(container["Id"], force=True, v=True)
                removed.append(short_id)
            except Exception as exc:  # removed meanwhile (auto-remove) or in removal: fine
                log.debug("reap %s: %s", short_id, exc)
    finally:
        if own:
            client.close()
    if removed:
        log.info("sandbox: removed %d orphaned container(s): %s", len(removed), " ".join(removed))
    return removed


def _on_signal(signum: int, frame: object) -> None:
    close_all_sandboxes()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_exit_handlers() -> None:
    """atexit + SIGTERM/SIGHUP close every open sandbox. Only replaces default signal handlers."""
    global _handlers_installed
    with _install_lock:
        if _handlers_installed:
            return
        _handlers_installed = True
        atexit.register(close_all_sandboxes)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
