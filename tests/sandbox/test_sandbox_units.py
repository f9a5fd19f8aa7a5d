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


def _top_level_names(tree: ast.Module) -> list[str]:
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    names += [
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    ]
    return names


def test_server_parts_join_into_one_program_that_defines_every_name_a_part_imports() -> None:
    from importlib import resources

    program = server_source()
    tree = ast.parse(program)  # compiles as one module
    assert not [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and "sandbox" in n.module
    ]
    top = _top_level_names(tree)
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
        defined |= set(_top_level_names(part))
    assert defined == set(top) and {"main", "child_main", "read_msg", "judge", "Bridge"} <= defined
    # one namespace: a name defined twice would silently replace the first part's
    assert sorted(n for n in set(top) if top.count(n) > 1) == []
    assert program.rstrip().endswith("main()  # workers.judge_program swaps this line for judge_standalone()")


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
        self.settle()
        step, _, self.after = ScriptedWorker.script.pop(0).partition("/")
        self.settle_pending = True  # the server's word after its cleanup: ready, recycle or slow
        if step == "malformed":
            return {"ok": True, "stdout": 5}
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

    def readable_now(self) -> bool:
        return self.after != "late-recycle"  # its word comes after the next request was sent

    def read_message(self, deadline: float) -> dict[str, Any]:
        if self.after == "slow":
            time.sleep(0.3)
        if self.after in ("recycle", "late-recycle"):
            return {"ok": True, "recycle": "over budget"}
        return {"ok": True, "ready": True}

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


def test_pool_replaces_a_worker_whose_cleanup_ran_over_budget(fake: FakeSandbox) -> None:
    ScriptedWorker.script = ["ok/recycle", "ok"]
    assert fake.run("a").stdout == "worker 1\n"
    assert fake.run("b").stdout == "worker 2\n"  # the next run never waits on, or blames, worker 1


def test_a_run_sent_to_a_worker_that_then_asks_to_be_replaced_goes_to_another(fake: FakeSandbox) -> None:
    ScriptedWorker.script = ["ok/late-recycle", "ok"]
    assert fake.run("a").stdout == "worker 1\n"
    second = fake.run("b")  # sent to worker 1 while it cleaned up; it never read it
    assert second.ok and second.stdout == "worker 2\n"


def test_a_worker_still_cleaning_up_is_waited_for_not_blamed(fake: FakeSandbox) -> None:
    ScriptedWorker.script = ["ok/slow", "ok"]
    assert fake.run("a").stdout == "worker 1\n"
    started = time.monotonic()
    assert fake.run("b").stdout == "worker 1\n"
    assert 0.25 < time.monotonic() - started < 2


def test_a_malformed_answer_breaks_the_worker_not_the_caller(fake: FakeSandbox) -> None:
    ScriptedWorker.script = ["malformed", "ok"]
    first = fake.run("a")
    assert first.error is not None and first.error.name == "SandboxCrashed" and not first.ok
    assert fake.run("b").stdout == "worker 2\n"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("timeout_s", float("inf")),
        ("timeout_s", float("nan")),
        ("timeout_s", -1),
        ("timeout_s", 301),
        ("max_timeout_s", 0),
        ("cleanup_budget_s", float("inf")),
        ("pool_size", 0),
        ("pids_limit", True),
    ],
)
def test_settings_that_cannot_work_are_refused(setting: str, value: object) -> None:
    from ragcoder.errors import ConfigError

    with pytest.raises(ConfigError, match=setting):
        SandboxSettings(**{setting: value})


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
