"""Sandboxes on several Docker engines: this machine's engine plus a second dockerd started here on
a TCP socket of 127.0.0.1 (its own containerd, data root, exec root and pid file), which starts
without the sandbox image and is killed mid-run in one test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragcoder.errors import ConfigError, EngineUnavailable, ImageMissing
from tests.conftest import docker_or_skip
from tests.scale.conftest import free_port


@dataclass
class SecondEngine:
    """A dockerd of our own: ``kill()`` is SIGKILL (the host dies), ``start()`` brings it back."""

    root: Path
    port: int
    containerd: subprocess.Popen | None = None
    dockerd: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.containerd is None or self.containerd.poll() is not None:
            self.containerd = subprocess.Popen(
                [
                    "containerd",
                    "--root",
                    str(self.root / "containerd"),
                    "--state",
                    str(self.root / "cstate"),
                    "--address",
                    str(self.root / "containerd.sock"),
                ],
                stdout=(self.root / "containerd.log").open("a"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            _wait(lambda: (self.root / "containerd.sock").exists(), 30, "containerd socket")
        self.dockerd = subprocess.Popen(
            [
                "dockerd",
                "-H",
                self.url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "--containerd",
                str(self.root / "containerd.sock"),
                "--iptables=false",
                "--bridge=none",
                "--ip-masq=false",
            ],
            stdout=(self.root / "dockerd.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(self.answers, 60, f"dockerd on {self.url}")

    def answers(self) -> bool:
        from ragcoder.sandbox.lifecycle import docker_client

        try:
            docker_client(2, base_url=self.url).close()
        except EngineUnavailable:
            return False
        return True

    def kill(self) -> None:
        assert self.dockerd is not None
        self.dockerd.send_signal(signal.SIGKILL)
        self.dockerd.wait()

    def stop(self) -> None:
        """SIGTERM dockerd (it stops its containers and unmounts), then containerd."""
        for process in (self.dockerd, self.containerd):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout_s} s")


def engine_problem() -> str | None:
    if os.geteuid() != 0:
        return "a second dockerd needs root"
    missing = [tool for tool in ("dockerd", "containerd") if shutil.which(tool) is None]
    return f"not installed: {', '.join(missing)} (apt-get install docker.io)" if missing else None


@pytest.fixture
def second_engine() -> Iterator[SecondEngine]:
    docker_or_skip()
    problem = engine_problem()
    if problem:
        if os.environ.get("RAGCODER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"the multi-host tests need a second dockerd: {problem}")
        pytest.skip(problem)
    root = Path(tempfile.mkdtemp(prefix="rcd-", dir="/tmp"))  # socket paths must stay short
    engine = SecondEngine(root, free_port())
    try:
        engine.start()
        yield engine
    finally:
        with contextlib.suppress(Exception):
            if engine.dockerd is not None and engine.dockerd.poll() is not None:
                engine.start()  # killed by the test: a restart reaps its containers, then it stops cleanly
        engine.stop()
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def open_hosts(*hosts: str, pool_size: int = 1):
    from ragcoder.sandbox.multi_host import MultiHostSandbox

    return MultiHostSandbox(list(hosts), pool_size=pool_size, timeout_s=20.0, mem_limit="256m")


LOCAL = "unix:///var/run/docker.sock"


def containers_on(url: str) -> int:
    from ragcoder.sandbox.lifecycle import docker_client

    client = docker_client(5, base_url=url)
    try:
        return len(client.api.containers(filters={"label": "ragcoder=1"}))
    finally:
        client.close()


@pytest.mark.docker
def test_the_image_is_shipped_and_runs_spread_over_both_hosts(second_engine: SecondEngine) -> None:
    from ragcoder.sandbox.lifecycle import docker_client

    with open_hosts(LOCAL, second_engine.url) as sandbox:
        status = {row["host"]: row for row in sandbox.status()}
        assert status[second_engine.url]["shipped_image"] and not status[LOCAL]["shipped_image"]
        assert containers_on(second_engine.url) >= 1  # its warm pool runs there
        with ThreadPoolExecutor(4) as pool:  # four runs of a second each on two one-server hosts
            results = list(
                pool.map(lambda i: sandbox.run(f"import time; time.sleep(1); print({i})"), range(4))
            )
        assert [r.stdout.strip() for r in results] == ["0", "1", "2", "3"] and all(r.ok for r in results)
        runs = {row["host"]: row["runs"] for row in sandbox.status()}
        assert runs == {LOCAL: 2, second_engine.url: 2}  # least busy: two each
        report = sandbox.run_tests("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5")
        assert report.passed
    client = docker_client(5, base_url=second_engine.url)
    client.images.get("ragcoder-sandbox:latest")  # still there for the next run: shipped once
    client.close()
    from ragcoder.sandbox import open_sandbox
    from ragcoder.sandbox.multi_host import MultiHostSandbox

    with open_sandbox("auto", hosts=[LOCAL, second_engine.url], pool_size=1) as again:  # docker_hosts' path
        assert isinstance(again, MultiHostSandbox)
        assert not any(row["shipped_image"] for row in again.status())  # nothing to ship the second time
        assert again.run("print(1 + 1)").stdout.strip() == "2"


@pytest.mark.docker
def test_a_host_killed_mid_run_is_drained_and_its_runs_finish_elsewhere(second_engine: SecondEngine) -> None:
    with open_hosts(LOCAL, second_engine.url, pool_size=2) as sandbox:
        code = "import time; time.sleep(3); print('done', {})"
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(sandbox.run, code.format(i)) for i in range(4)]
            time.sleep(1.5)  # all four are running, two on each host
            second_engine.kill()
            results = [f.result(timeout=120) for f in futures]
        assert [r.stdout.strip() for r in results] == [f"done {i}" for i in range(4)]
        assert all(r.ok for r in results)
        status = {row["host"]: row for row in sandbox.status()}
        dead = status[second_engine.url]
        assert not dead["up"] and "stopped answering" in dead["problem"]
        assert dead["retried_elsewhere"] == 2 and status[LOCAL]["runs"] == 4
        assert sandbox.run("print(6 * 7)").stdout.strip() == "42"  # later runs: the live host only
        assert sandbox.status()[0]["runs"] == 5


@pytest.mark.docker
def test_a_host_down_at_start_is_reported_and_none_up_is_an_error(second_engine: SecondEngine) -> None:
    nobody = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ImageMissing, match="no Docker host has the sandbox image"):
        open_hosts(nobody, second_engine.url)  # the one host up lacks the image, and nobody can ship it
    with open_hosts(nobody, LOCAL) as sandbox:
        status = {row["host"]: row for row in sandbox.status()}
        assert not status[nobody]["up"] and "no Docker engine answers" in status[nobody]["problem"]
        assert sandbox.run("print('ok')").stdout.strip() == "ok"
    with pytest.raises(EngineUnavailable, match="no Docker host answers") as err:
        open_hosts(nobody)
    assert "\n" not in str(err.value)


def test_docker_hosts_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragcoder.agent.config import resolve_config
    from ragcoder.sandbox import open_sandbox

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "ragcoder.toml").write_text(
        'docker_hosts = ["unix:///var/run/docker.sock", "ssh://me@box"]\n'
    )
    assert resolve_config().docker_hosts == ("unix:///var/run/docker.sock", "ssh://me@box")
    monkeypatch.setenv("RAGCODER_DOCKER_HOSTS", "tcp://127.0.0.1:2375, unix:///run/d.sock")
    assert resolve_config().docker_hosts == ("tcp://127.0.0.1:2375", "unix:///run/d.sock")
    with pytest.raises(ConfigError, match="'http://box' from flag is not a Docker host URL"):
        resolve_config({"docker_hosts": ["http://box"]})
    with pytest.raises(ConfigError, match="names a host twice"):
        resolve_config({"docker_hosts": "tcp://a:1,tcp://a:1"})
    with pytest.raises(ConfigError, match="not for sandbox = 'local'"):
        open_sandbox("local", hosts=["tcp://a:1"])
