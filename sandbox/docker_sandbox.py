"""DockerSandbox: a warm pool of hardened containers, each running the stdlib run server.

Every container is hardened by default (all limits are :class:`SandboxSettings` fields): no
network, memory = memory+swap, pids limit, CPU quota, read-only rootfs, size-capped tmpfs at
``/tmp`` and ``/work`` (files travel over the server channel, so no put_archive and no host
disk a run could fill), uid 10001, ``cap_drop=ALL``, ``no-new-privileges``, labels, no ports.

The host talks to the server over the container's attached stdin/stdout (no port). The
container is created with ``StdinOnce`` and ``AutoRemove``: if this process dies, even by
SIGKILL, its attach connection closes, the server reads EOF and exits, and Docker removes the
container. :func:`ragcoder.sandbox.lifecycle.reap_orphans` at start covers anything left anyway.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from ragcoder.sandbox.lifecycle import docker_client, install_exit_handlers, owner_labels, reap_orphans
from ragcoder.sandbox.pool import ServerSandbox
from ragcoder.sandbox.seccomp import build_filter, machine, supported
from ragcoder.sandbox.settings import LABEL, SANDBOX_UID, SandboxSettings, parse_size
from ragcoder.sandbox.workers import Worker, WorkerDied, WorkerTimeout, server_command

from ragcoder.errors import ImageMissing, SandboxCrashed

log = logging.getLogger(__name__)
_STDOUT, _STDERR = 1, 2


def server_config(settings: SandboxSettings) -> dict[str, Any]:
    """The server's config in a container: it owns the PID and IPC namespaces, and stacks the
    sandbox's seccomp filter on Docker's default profile before it reads any code."""
    config = settings.server_config(
        work="/work", wipe=["/work", "/tmp", "/dev/shm"], own_pidns=True, ipc_clean=True, mqueue="/dev/mqueue"
    )
    if settings.seccomp:
        if supported():
            config["seccomp_bpf"] = base64.b64encode(build_filter()).decode("ascii")
        else:
            log.warning(
                "sandbox: no seccomp table for %s: containers run with Docker's default only", machine()
            )
    return config


def hardened_container_config(
    api: Any, settings: SandboxSettings, command: list[str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The container config every sandbox container is created with."""
    from docker.types import Ulimit

    mem = settings.mem_bytes
    uid = SANDBOX_UID
    host_config = api.create_host_config(
        network_mode="none",
        mem_limit=mem,
        memswap_limit=mem,
        pids_limit=settings.pids_limit,
        nano_cpus=int(settings.cpus * 1e9),
        cpu_shares=settings.cpu_shares,
        read_only=True,
        tmpfs={
            "/tmp": f"size={parse_size(settings.tmp_size)},mode=1777",
            "/work": f"size={parse_size(settings.work_size)},uid={uid},gid={uid},mode=0700",
        },
        shm_size=parse_size(settings.shm_size),
        ipc_mode="private",  # its own IPC namespace, emptied by the server after every run
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        ulimits=[Ulimit(name="core", soft=0, hard=0), Ulimit(name="nofile", soft=1024, hard=1024)],
        auto_remove=True,
        init=False,
    )
    config = api.create_container_config(
        settings.image,
        command,
        user=f"{uid}:{uid}",
        stdin_open=True,
        tty=False,
        detach=False,
        labels=owner_labels() | (labels or {}),
        working_dir="/work",
        environment={"HOME": "/work", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"},
        hostname="sandbox",
        network_disabled=True,
        host_config=host_config,
    )
    config.update({"OpenStdin": True, "StdinOnce": True, "AttachStdin": True, "AttachStdout": True})
    return config


class DockerWorker(Worker):
    """One hardened container running the server; talks over the attached stdin/stdout."""

    def __init__(self, client: Any, settings: SandboxSettings, labels: dict[str, str] | None = None) -> None:
        super().__init__()
        from docker.errors import APIError, ImageNotFound

        self._api = client.api
        self.container_id: str | None = None
        self._raw = b""
        self._payload = bytearray()
        self.stderr_tail = b""
        config = server_config(settings)
        command = server_command("python3", config)
        try:
            container = hardened_container_config(self._api, settings, command, labels)
            self.container_id = self._api.create_container_from_config(container)["Id"]
            sock = self._api.attach_socket(
                self.container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            self._sock: socket.socket = getattr(sock, "_sock", sock)
            self._api.start(self.container_id)
            self.wait_hello(settings.start_timeout_s, seccomp="seccomp_bpf" in config)
        except ImageNotFound as exc:
            self.kill()
            raise ImageMissing(f"the sandbox image {settings.image} is not built") from exc
        except (APIError, WorkerDied, WorkerTimeout, OSError) as exc:
            self.kill()
            raise SandboxCrashed(f"could not start a sandbox container: {exc}") from exc
        except BaseException:
            self.kill()
            raise

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _channel_fileno(self) -> int | None:
        return self._sock.fileno() if self._sock.fileno() >= 0 else None

    def idle_ok(self) -> bool:
        return not self._payload and not self._raw and super().idle_ok()

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        while len(self._payload) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeout("no answer from the sandbox container in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                raise WorkerDied("the sandbox container closed its output")
            self._raw += chunk
            self._demux()
        data = bytes(self._payload[:n])
        del self._payload[:n]
        return data

    def _demux(self) -> None:
        """Docker multiplexes stdout/stderr frames: 8-byte header (stream, 0, 0, 0, size32)."""
        raw = self._raw
        pos = 0
        while len(raw) - pos >= 8:
            stream = raw[pos]
            size = int.from_bytes(raw[pos + 4 : pos + 8], "big")
            if len(raw) - pos - 8 < size:
                break
            body = raw[pos + 8 : pos + 8 + size]
            if stream == _STDOUT:
                self._payload += body
            elif stream == _STDERR:
                self.stderr_tail = (self.stderr_tail + body)[-2000:]
            pos += 8 + size
        self._raw = raw[pos:]

    def died_of_oom(self) -> bool:
        if self.container_id is None:
            return False
        try:
            for _ in range(20):
                state = self._api.inspect_container(self.container_id)["State"]
                if state.get("OOMKilled"):
                    return True
                if not state.get("Running"):
                    return False
                time.sleep(0.05)
        except Exception:
            return False
        return False

    def kill(self) -> None:
        self.dead = True
        sock = getattr(self, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        if self.container_id is not None:
            # Already gone (auto-remove) or engine down: nothing left to free.
            with contextlib.suppress(Exception):
                self._api.remove_container(self.container_id, force=True, v=True)


class DockerSandbox(ServerSandbox):
    """Hardened Docker containers in a warm pool; a run costs a fork, not a container start."""

    name = "docker"

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        reap: bool = True,
        host: str | None = None,
        **overrides: Any,
    ) -> None:
        """``host``: the engine's URL (see :func:`docker_client`); None: the environment's."""
        merged = SandboxSettings.from_kwargs(**{**(settings or SandboxSettings()).__dict__, **overrides})
        self._owner_pid = os.getpid()
        self.sandbox_id = uuid.uuid4().hex[:12]  # label ragcoder.sandbox on this sandbox's containers
        self.host = host
        self._client = docker_client(base_url=host)
        try:
            from docker.errors import ImageNotFound

            self._client.images.get(merged.image)
        except ImageNotFound as exc:
            self._client.close()
            raise ImageMissing(f"the sandbox image {merged.image} is not built") from exc
        if reap:
            reap_orphans(self._client)
        install_exit_handlers()
        try:
            super().__init__(merged)
        except BaseException:
            self._client.close()
            raise

    def _make_worker(self) -> Worker:
        return DockerWorker(self._client, self.settings, {f"{LABEL}.sandbox": self.sandbox_id})

    def close(self) -> None:
        was_open = not self._closed
        super().close()
        if was_open:
            with contextlib.suppress(Exception):
                self._client.close()

    def containers(self) -> list[str]:
        """Ids of the containers this sandbox holds now (for tests and `status`)."""
        found = self._client.api.containers(
            all=True, filters={"label": [f"{LABEL}=1", f"{LABEL}.sandbox={self.sandbox_id}"]}
        )
        return [c["Id"] for c in found]
