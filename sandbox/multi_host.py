"""Sandboxes on several Docker engines: one warm pool per host, each run to the least busy one.

``MultiHostSandbox(["unix:///var/run/docker.sock", "tcp://10.0.0.7:2375", "ssh://me@gpu1"])`` is a
:class:`~ragcoder.sandbox.base.Sandbox` over one :class:`DockerSandbox` per engine (the same
hardened containers, the same warm pool), so the agent, batch runs and the hidden-test scorer
use it as they use one engine:

- **least busy**: a run goes to the live host with the fewest runs in flight per warm server;
- **shipping the image**: a host without the sandbox image gets it from one that has it,
  ``docker save`` streamed into ``docker load`` through the SDK (no registry involved);
- **a dead host** (its engine stops answering) is drained: its pool is closed, it takes no more
  runs, and it is reported (:meth:`status`, a warning in the log). A run that was on it when it
  died is run again on another host: the code never ran to an answer there, so it runs once.
  A host that is down at start is reported the same way; only when none answers is that an error.

A run that crashes its server while the host still answers is the code's doing (or the
server's): that result is returned as it is, as with one engine.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragcoder.sandbox.base import ExecResult, Sandbox
from ragcoder.sandbox.docker_sandbox import DockerSandbox
from ragcoder.sandbox.lifecycle import docker_client
from ragcoder.sandbox.settings import SandboxSettings

from ragcoder.errors import EngineUnavailable, ImageMissing, SandboxClosed, SandboxError

log = logging.getLogger(__name__)
PING_TIMEOUT_S = 5.0  # a live engine answers a ping in milliseconds; a dead TCP host fails at once
SHIP_TIMEOUT_S = 600.0  # the 117 MB image loaded in about 6 s into a local engine; a slow link takes longer


@dataclass
class HostState:
    """One engine: its sandbox while it is up, what it is doing, and why it is out if it is."""

    url: str
    sandbox: DockerSandbox | None = None
    in_flight: int = 0
    runs: int = 0
    retried_elsewhere: int = 0  # runs that were in flight here when it died
    shipped_image: bool = False
    problem: str = ""  # why the host is out ("" while it is up)
    out_since: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def up(self) -> bool:
        return self.sandbox is not None and not self.problem

    def load(self) -> float:
        size = self.sandbox.settings.pool_size if self.sandbox is not None else 1
        return self.in_flight / max(1, size)


def ship_image(image: str, source: Any, target: Any) -> None:
    """``docker save`` on ``source`` streamed into ``docker load`` on ``target`` (SDK clients)."""
    timeouts = source.api.timeout, target.api.timeout
    source.api.timeout = target.api.timeout = SHIP_TIMEOUT_S
    try:
        stream = source.api.get_image(image)  # the save tarball, in chunks
        target.api.load_image(stream)
    finally:
        source.api.timeout, target.api.timeout = timeouts
    target.images.get(image)  # raises ImageNotFound if the load did not produce it


class MultiHostSandbox(Sandbox):
    """The sandbox over several Docker engines (see the module docstring)."""

    name = "docker-hosts"

    def __init__(
        self, hosts: Sequence[str], settings: SandboxSettings | None = None, **overrides: Any
    ) -> None:
        if not hosts:
            raise ValueError("MultiHostSandbox needs at least one Docker host")
        self.settings = SandboxSettings.from_kwargs(
            **{**(settings or SandboxSettings()).__dict__, **overrides}
        )
        self.hosts = [HostState(url) for url in dict.fromkeys(hosts)]
        self._lock = threading.Lock()
        self._closed = False
        clients = self._connect()
        try:
            self._ship_missing_image(clients)
            for host in self.hosts:
                if not host.problem:
                    self._open(host)
        finally:
            for client in clients.values():
                with contextlib.suppress(Exception):
                    client.close()
        if not any(host.up for host in self.hosts):
            self.close()
            raise EngineUnavailable(
                "no Docker host answers: " + "; ".join(f"{h.url}: {h.problem}" for h in self.hosts),
                hint="check docker_hosts (unix://, tcp://HOST:2375, ssh://USER@HOST) and that each engine runs",
            )

    # -- start --------------------------------------------------------------------------------
    def _connect(self) -> dict[str, Any]:
        clients = {}
        for host in self.hosts:
            try:
                clients[host.url] = docker_client(PING_TIMEOUT_S, base_url=host.url)
            except EngineUnavailable as exc:
                self._mark_out(host, str(exc))
        return clients

    def _ship_missing_image(self, clients: dict[str, Any]) -> None:
        from docker.errors import ImageNotFound

        image = self.settings.image
        having, lacking = [], []
        for url, client in clients.items():
            try:
                client.images.get(image)
                having.append(url)
            except ImageNotFound:
                lacking.append(url)
        if not lacking:
            return
        if not having:
            raise ImageMissing(f"no Docker host has the sandbox image {image}")
        for url in lacking:
            host = next(h for h in self.hosts if h.url == url)
            started = time.monotonic()
            try:
                ship_image(image, clients[having[0]], clients[url])
            except Exception as exc:
                self._mark_out(host, f"could not ship {image} from {having[0]}: {type(exc).__name__}: {exc}")
                continue
            host.shipped_image = True
            log.info(
                "sandbox: shipped %s from %s to %s in %.1f s",
                image,
                having[0],
                url,
                time.monotonic() - started,
            )

    def _open(self, host: HostState) -> None:
        try:
            host.sandbox = DockerSandbox(self.settings, host=host.url)
        except SandboxError as exc:
            self._mark_out(host, str(exc))

    # -- dispatch -----------------------------------------------------------------------------
    def _pick(self, avoid: set[str]) -> HostState:
        with self._lock:
            if self._closed:
                raise SandboxClosed("the sandbox is closed", hint="open a new one")
            live = [h for h in self.hosts if h.up and h.url not in avoid]
            if not live:
                out = "; ".join(f"{h.url}: {h.problem}" for h in self.hosts if h.problem)
                raise EngineUnavailable(f"no Docker host is left to run on ({out or 'all tried'})")
            host = min(live, key=lambda h: (h.load(), h.runs))
            host.in_flight += 1
            return host

    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        tried: set[str] = set()
        while True:
            host = self._pick(tried)
            try:
                assert host.sandbox is not None
                result = host.sandbox.run(code, stdin=stdin, files=files, timeout=timeout)
            except (EngineUnavailable, SandboxClosed, SandboxError) as exc:
                if not self._host_died(host, f"{type(exc).__name__}: {exc}"):
                    raise
                tried.add(host.url)
                continue
            finally:
                with self._lock:
                    host.in_flight -= 1
            crashed = result.error is not None and result.error.name == "SandboxCrashed"
            if crashed and self._host_died(host, "its engine stopped answering during a run"):
                tried.add(host.url)
                continue
            host.runs += 1
            return result

    def _host_died(self, host: HostState, why: str) -> bool:
        """Whether ``host``'s engine is gone (then it is drained and reported); False if it answers."""
        if host.problem:
            host.retried_elsewhere += 1
            return True
        try:
            docker_client(PING_TIMEOUT_S, base_url=host.url).close()
        except EngineUnavailable:
            pass
        else:
            return False
        host.retried_elsewhere += 1
        self._mark_out(host, why)
        sandbox, host.sandbox = host.sandbox, None
        if sandbox is not None:  # drain in the background: closing waits on a dead engine's timeouts
            threading.Thread(target=sandbox.close, name="ragcoder-drain-host", daemon=True).start()
        return True

    def _mark_out(self, host: HostState, why: str) -> None:
        with host.lock:
            if host.problem:
                return
            host.problem, host.out_since = why, time.monotonic()
        log.warning("sandbox: Docker host %s is out: %s", host.url, why)

    # -- reporting and lifecycle --------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """One line per host: up or why not, runs, runs in flight, runs retried elsewhere."""
        return [
            {
                "host": h.url,
                "up": h.up,
                "problem": h.problem,
                "runs": h.runs,
                "in_flight": h.in_flight,
                "retried_elsewhere": h.retried_elsewhere,
                "shipped_image": h.shipped_image,
            }
            for h in self.hosts
        ]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for host in self.hosts:
            sandbox, host.sandbox = host.sandbox, None
            if sandbox is not None:
                with contextlib.suppress(Exception):
                    sandbox.close()
