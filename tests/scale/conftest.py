"""Fixtures for the scale tests: real servers on 127.0.0.1, each on a free port, each stopped after.

- ``start_openai_server(model)``: tests/scale/openai_server.py (our chat model behind the OpenAI API)
  in its own process;
- ``chroma_server``: a real ``chroma run --path DIR --port P`` that a test can stop and restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str, module: str, function: str = "main") -> list[str]:
    """The command of a console script installed with a package (the venv's bin, else ``python -c``)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    from shutil import which

    found = which(name)
    if found:
        return [found]
    return [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def start_openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., str]]:
    """Start tests/scale/openai_server.py on a free port; returns its base URL (``.../v1``).
    Servers live until the module's tests are done (a start costs 10-20 s: torch imports)."""
    started: list[subprocess.Popen] = []
    tmp_path = tmp_path_factory.mktemp("openai-server")

    def start(model: str, *, max_batch: int = 1, max_new_tokens: int = 512, name: str | None = None) -> str:
        port = free_port()
        command = [
            sys.executable,
            str(HERE / "openai_server.py"),
            "--model",
            model,
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--max-new-tokens",
            str(max_new_tokens),
        ]
        if name:
            command += ["--name", name]
        log = (tmp_path / f"openai-{port}.log").open("w")
        # torch threads: the model's own count, as in-process (chains/llm/cpu_threads.py)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/v1/models", 180, process)
        except Exception:
            raise RuntimeError((tmp_path / f"openai-{port}.log").read_text()[-2000:]) from None
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for process in started:
        stop(process)


@dataclass
class ChromaServer:
    """A real ``chroma run`` over ``path`` on ``port``; ``stop()``/``start()`` keep both."""

    path: Path
    port: int
    log: Path
    process: subprocess.Popen | None = None
    starts: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [
            *tool("chroma", "chromadb.cli.cli", "app"),
            "run",
            "--path",
            str(self.path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        handle = self.log.open("a")
        self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        wait_for_http(f"{self.url}/api/v2/heartbeat", 60, self.process)
        self.starts.append(time.monotonic())

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


@pytest.fixture
def chroma_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChromaServer]:
    """A Chroma server on a free port over a fresh folder; the user's data dir moved under tmp_path."""
    from ragcoder.chains.retrieval import remote_index

    monkeypatch.setenv("RAGCODER_DATA_DIR", str(tmp_path / "data"))
    server = ChromaServer(tmp_path / "chroma-server", free_port(), tmp_path / "chroma.log")
    server.start()
    yield server
    server.stop()
    remote_index.forget_clients()


@pytest.fixture(scope="session")
def tiny_chat(model_tiny_dir: Path):
    """The tiny random model in this process, loaded as the test server loads it (fp32)."""
    from ragcoder.chains.llm.chat_model import load_chat_model

    return load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=24)


@dataclass
class RayCluster:
    """``ray start --head`` plus one worker node (``ray start --address``), one CPU each, on a
    loopback address; both started with ``--block`` so that SIGTERM to them stops everything."""

    address: str
    processes: list[subprocess.Popen]
    temp_dir: Path


RAY_NODE_IP = "127.0.0.2"  # Ray rewrites 127.0.0.1 into the machine's network address; not this one


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    import tempfile

    require_ray()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster; the driver must match
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    ray = tool("ray", "ray.scripts.scripts")
    common = [
        "--block",
        "--node-ip-address",
        RAY_NODE_IP,
        "--num-cpus",
        "1",
        "--disable-usage-stats",
        "--object-store-memory",
        str(150 << 20),
    ]
    head = [
        *ray,
        "start",
        "--head",
        "--port",
        str(port),
        "--ray-client-server-port",
        str(free_port()),
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--include-dashboard=false",
        "--temp-dir",
        str(temp_dir),
        *common,
    ]
    processes = [subprocess.Popen(head, stdout=(temp_dir / "head.log").open("w"), stderr=subprocess.STDOUT)]
    try:
        _wait_for_log(temp_dir / "head.log", "Ray runtime started", processes[0], 120)
        worker = [
            *ray,
            "start",
            "--address",
            f"{RAY_NODE_IP}:{port}",
            "--dashboard-agent-listen-port",
            str(free_port()),
            *common,
        ]
        processes.append(
            subprocess.Popen(worker, stdout=(temp_dir / "worker.log").open("w"), stderr=subprocess.STDOUT)
        )
        _wait_for_log(temp_dir / "worker.log", "Ray runtime started", processes[1], 120)
        yield RayCluster(f"{RAY_NODE_IP}:{port}", processes, temp_dir)
    finally:
        for process in reversed(processes):
            stop(process, timeout_s=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_log(log: Path, text: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"{log} never said {text!r}")


def require_ray() -> None:
    """Skip without ray, except in CI (where ``.[dev]`` installs it): fail there."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI") or os.environ.get("RAGCODER_REQUIRE_DOCKER") == "1":
            pytest.fail("ray is required in CI: pip install 'ragcoder[ray]'")
        pytest.skip("pip install 'ragcoder[ray]'")
