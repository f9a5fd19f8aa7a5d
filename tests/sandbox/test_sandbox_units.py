"""Fast unit tests: settings, pool behaviour with scripted fake workers, backend choice, CLI."""

from __future__ import annotations

import ast
import threading
import time
from typing import Any, ClassVar

import pytest
from ragcoder.sandbox import SandboxSettings, open_sandbox
from ragcoder.sandbox.pool import ServerSandbox, WarmPool
from ragcoder.sandbox.settings import parse_size
from ragcoder.sandbox.workers import SERVER_PARTS, Worker, WorkerDied, WorkerTimeout, server_source

from tests.sandbox.conftest import require_bwrap


def test_parse_size() -> None:
    assert parse_size("512m") == 512 << 20
    assert parse_size("1g") == 1 << 30
    assert parse_size("64KiB") == 64 << 10
    assert parse_size(1234) == 1234
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")


def test_server_parts_join_into_one_program_that_defines_every_name_a_part_imports() -> None:
    from importlib import resources

    program = server_source()
    tree = ast.parse(program)  # compiles as one module
    assert not [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and "sandbox" in n.module
    ]
    top = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    top |= {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    defined: set[str] = set()
    for name in SERVER_PARTS:
        part = ast.parse(
            resources.files("ragcoder.sandbox.server").joinpath(name).read_text(encoding="utf-8")
        )
        for node in part.body:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("ragcoder.sandbox.")
            ):
                taken = {alias.name for alias in node.names}
                assert taken <= defined, f"{name} imports {taken - defined} from a later part"
            elif isinstance(node, ast.FunctionDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    assert defined == top and {"main", "child_main", "read_msg"} <= top
    assert program.rstrip().endswith("main()")  # the entry point runs last, with every part defined


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown sandbox setting"):
        SandboxSettings.from_kwargs(memory="1g")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sandbox kind"):
        open_sandbox("vm")


class ScriptedWorker(Worker):
    """Answers from a script: 'ok', 'timeout', 'die', 'timed_out' (server-side timeout)."""

    script: ClassVar[list[str]] = []
    made = 0
    killed = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        with ScriptedWorker.lock:
            ScriptedWorker.made += 1
            self.serial = ScriptedWorker.made

    def _send(self, data: bytes) -> None:
        pass

    def _recv_exact(self, n: int, deadline: float) -> bytes:  # pragma: no cover - request is overridden
        raise NotImplementedError

    def request(self, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        step = ScriptedWorker.script.pop(0)
        if step == "timeout":
            self.dead = True
            raise WorkerTimeout("hung")
        if step == "die":
            self.dead = True
            raise WorkerDied("gone")
        return {
            "ok": True,
            "stdout": f"worker {self.serial}\n",
            "stdout_total": 9,
            "stderr": "",
            "stderr_total": 0,
            "exit_code": -9 if step == "timed_out" else 0,
            "timed_out": step == "timed_out",
            "oom_killed": False,
            "duration_ms": 1.0,
            "error": None,
            "files": {},
        }

    def kill(self) -> None:
        with ScriptedWorker.lock:
            ScriptedWorker.killed += 1
        self.dead = True


class FakeSandbox(ServerSandbox):
    name = "fake"

    def _make_worker(self) -> Worker:
        return ScriptedWorker()


@pytest.fixture
def fake() -> FakeSandbox:
    ScriptedWorker.script = []
    ScriptedWorker.made = ScriptedWorker.killed = 0
    sandbox = FakeSandbox(pool_size=1, grace_s=0.0)
    yield sandbox
    sandbox.close()


def test_pool_reuses_a_healthy_worker(fake: FakeSandbox) -> None:
    ScriptedWorker.script = ["ok", "ok"]
    assert fake.run("a").stdout == "worker 1\n"
    assert fake.run("b").stdout == "worker 1\n"
    assert ScriptedWorker.made == 1


@pytest.mark.parametrize("bad", ["timeout", "die", "timed_out"])
def test_pool_replaces_a_worker_after_a_bad_run(fake: FakeSandbox, bad: str) -> None:
    ScriptedWorker.script = [bad, "ok"]
    first = fake.run("bad")
    if bad == "die":
        assert first.error is not None and first.error.name == "SandboxCrashed"
    else:
        assert first.timed_out
    second = fake.run("good")
    assert second.ok
    assert second.stdout == "worker 2\n"  # never the worker that saw the bad run


def test_pool_never_hands_out_a_worker_that_died_idle(fake: FakeSandbox) -> None:
    ScriptedWorker.script = ["ok", "ok"]
    assert fake.run("a").stdout == "worker 1\n"
    fake.pool._ready.queue[0].dead = True  # e.g. its container was killed from outside
    assert fake.run("b").stdout == "worker 2\n"


def test_pool_close_kills_everything_and_is_idempotent() -> None:
    ScriptedWorker.made = ScriptedWorker.killed = 0
    pool = WarmPool(ScriptedWorker, 3)
    deadline = time.monotonic() + 10
    while ScriptedWorker.made < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker = pool.acquire()
    pool.release(worker)
    pool.close()
    pool.close()
    assert ScriptedWorker.made == 3
    assert ScriptedWorker.killed == 3


def test_require_docker_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sandbox import conftest

    monkeypatch.setattr(conftest, "docker_problem", lambda: "no Docker engine answers: run X")
    monkeypatch.setenv("RAGCODER_REQUIRE_DOCKER", "1")
    with pytest.raises(pytest.fail.Exception, match="RAGCODER_REQUIRE_DOCKER=1"):
        conftest.require_docker()
    monkeypatch.delenv("RAGCODER_REQUIRE_DOCKER")
    with pytest.raises(pytest.skip.Exception, match="run X"):
        conftest.require_docker()


def test_cli_status_and_reap_run() -> None:
    from click.testing import CliRunner

    from ragcoder.cli.commands.sandbox_cmd import sandbox

    result = CliRunner().invoke(sandbox, ["status"])
    assert result.exit_code == 0, result.output
    assert "auto backend:" in result.output


def test_refused_input_does_not_leak_pool_workers(fake: FakeSandbox) -> None:
    for _ in range(3):  # more than the pool holds: a leak would block the next run
        with pytest.raises(ValueError, match="relative paths inside /work"):
            fake.run("x", files={"/abs": "x"})
    ScriptedWorker.script = ["ok"]
    assert fake.run("fine").ok


def test_ensure_docker_script(tmp_path) -> None:
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "sandbox" / "scripts" / "ensure_docker.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    # No engine reachable and not root: one clear line, exit 1, nothing installed.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "id").write_text("#!/bin/sh\necho 1000\n")
    for tool in (fake_bin / "docker", fake_bin / "id"):
        tool.chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert "start Docker" in proc.stderr


def _local_warning(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, open_it: Any) -> str:
    import logging

    from ragcoder.sandbox import local_sandbox

    require_bwrap()  # skips outside CI (fails in CI) when bubblewrap is missing
    monkeypatch.setattr(local_sandbox, "_warned_weaker", False)
    with caplog.at_level(logging.WARNING), open_it() as sandbox:
        assert sandbox.name == "local"
    return " ".join(r.getMessage() for r in caplog.records if "bubblewrap" in r.getMessage())


def test_local_backend_warns_it_is_weaker_and_says_why_only_when_docker_failed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _local_warning(caplog, monkeypatch, lambda: open_sandbox("local"))
    assert "weaker than Docker" in chosen and "Docker is not usable" not in chosen
    caplog.clear()

    from ragcoder.sandbox import docker_sandbox

    from ragcoder.errors import EngineUnavailable

    def no_engine(**settings: Any) -> None:
        raise EngineUnavailable("Docker engine not reachable")

    monkeypatch.setattr(docker_sandbox, "DockerSandbox", no_engine)
    fallback = _local_warning(caplog, monkeypatch, lambda: open_sandbox("auto"))
    assert (
        "Docker is not usable (Docker engine not reachable)" in fallback and "weaker than Docker" in fallback
    )
