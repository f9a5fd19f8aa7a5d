"""Batch runs on Ray: a real cluster (``ray start --head`` and a worker node, one CPU each, on a
loopback address), the fan-out's retry of tasks whose actor died, and the CLI's ``--ray``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragcoder.errors import ModelUnavailable, RayWorkerError
from tests.scale.conftest import RayCluster, require_ray


@pytest.fixture(autouse=True)
def _ray_installed() -> None:
    require_ray()


@pytest.fixture(autouse=True)
def _pickle_this_module_by_value(_ray_installed: None) -> None:
    """The solvers below travel to the actors by value: the workers cannot import tests/."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class Sleeper:
    """make_solver: each item marks its start in ``marks`` (so a test can find one mid-run), sleeps."""

    marks: str
    seconds: float = 0.4
    fail_on: str = ""

    def __call__(self) -> Any:
        def solve(item: str) -> dict[str, Any]:
            Path(self.marks, f"{item}.{os.getpid()}.started").touch()
            if item == self.fail_on:
                raise ValueError(f"cannot do {item}")
            time.sleep(self.seconds)
            return {"item": item, "pid": os.getpid()}

        return solve


@dataclass(frozen=True)
class Broken:
    def __call__(self) -> Any:
        raise ModelUnavailable("the model server at http://127.0.0.1:9/v1 does not answer: ConnectError")


def running_pid(marks: Path, finished: set[str], timeout_s: float = 30.0) -> int:
    """The pid of an actor that has started an item not finished yet (the other actor may still be
    starting when the first result arrives: wait for it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for mark in sorted(marks.glob("*.started")):
            item, pid, _ = mark.name.split(".")
            if item not in finished:
                return int(pid)
        time.sleep(0.02)
    raise LookupError("nothing running")


def test_every_item_comes_back_once_from_both_nodes(ray_cluster: RayCluster, tmp_path: Path) -> None:
    from ragcoder.agent.ray_runner import ray_map

    items = [(f"t{i}", f"t{i}") for i in range(8)]
    outcomes = list(ray_map(items, Sleeper(str(tmp_path), 0.2), address=ray_cluster.address, workers=2))
    assert sorted(o.id for o in outcomes) == sorted(i for i, _ in items)
    assert all(o.error is None and o.value["item"] == o.id and o.tries == 1 for o in outcomes)
    assert len({o.value["pid"] for o in outcomes}) == 2  # two actors, one per node (one CPU each)


def test_an_actor_killed_mid_run_loses_and_repeats_nothing(ray_cluster: RayCluster, tmp_path: Path) -> None:
    from ragcoder.agent.ray_runner import ray_map

    items = [(f"t{i}", f"t{i}") for i in range(10)]
    outcomes = []
    killed = None
    for outcome in ray_map(items, Sleeper(str(tmp_path), 0.6), address=ray_cluster.address, workers=2):
        outcomes.append(outcome)
        if killed is None:  # SIGKILL an actor's process while it runs an item
            killed = running_pid(tmp_path, {o.id for o in outcomes})
            os.kill(killed, signal.SIGKILL)
    ids = [o.id for o in outcomes]
    assert sorted(ids) == sorted(i for i, _ in items) and len(ids) == len(set(ids))  # none lost, none twice
    assert all(o.error is None for o in outcomes)
    retried = [o for o in outcomes if o.tries > 1]
    assert len(retried) == 1 and retried[0].value["pid"] != killed  # finished on another actor


def test_a_task_that_raises_is_an_error_outcome(ray_cluster: RayCluster, tmp_path: Path) -> None:
    from ragcoder.agent.ray_runner import ray_map

    items = [("a", "a"), ("b", "b"), ("c", "c")]
    outcomes = {
        o.id: o
        for o in ray_map(
            items, Sleeper(str(tmp_path), 0.05, fail_on="b"), address=ray_cluster.address, workers=2
        )
    }
    assert outcomes["b"].error == "ValueError: cannot do b"
    assert outcomes["a"].value["item"] == "a" and outcomes["c"].value["item"] == "c"


def test_actors_that_cannot_set_up_end_the_run_in_one_line(ray_cluster: RayCluster) -> None:
    from ragcoder.agent.ray_runner import ray_map

    with pytest.raises(RayWorkerError) as err:
        list(ray_map([("a", "a")], Broken(), address=ray_cluster.address, workers=1))
    message = str(err.value)
    assert "\n" not in message and "ModelUnavailable" in message and "does not answer" in message


def test_no_cluster_at_the_address_is_one_line_error() -> None:
    from ragcoder.agent.ray_runner import ray_map

    from tests.scale.conftest import free_port

    with pytest.raises(RayWorkerError, match="no Ray cluster answers at"):
        list(ray_map([("a", "a")], Broken(), address=f"127.0.0.2:{free_port()}", workers=1))


# -- each actor's torch threads: the model's own count, as in-process ---------------------------------


@dataclass(frozen=True)
class ThreadsSeen:
    """make_solver: loads the model as an agent does, then reports the torch threads it runs with."""

    model: str

    def __call__(self) -> Any:
        import torch
        from ragcoder.chains.llm.chat_model import load_chat_model

        load_chat_model(self.model, quantize="none", max_new_tokens=4)

        def solve(item: str) -> dict[str, Any]:
            return {"threads": torch.get_num_threads(), "wait": os.environ.get("OMP_WAIT_POLICY")}

        return solve


def test_actors_get_the_drivers_thread_override_and_not_rays(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragcoder.agent.ray_runner import actor_env

    monkeypatch.delenv("RAGCODER_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = actor_env()  # empty: unset in the actor (Ray sets OMP_NUM_THREADS to an actor's CPUs)
    assert env["RAGCODER_NUM_THREADS"] == "" and env["OMP_NUM_THREADS"] == ""
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("RAGCODER_NUM_THREADS", "3")
    assert actor_env()["RAGCODER_NUM_THREADS"] == "3"


def in_process_threads(model: Path) -> int:
    """The threads torch runs ``model`` with in this process (the count before is put back)."""
    import torch
    from ragcoder.chains.llm.chat_model import clear_model_cache, load_chat_model

    before = torch.get_num_threads()
    clear_model_cache()
    try:
        load_chat_model(str(model), quantize="none", max_new_tokens=4)
        return torch.get_num_threads()
    finally:
        clear_model_cache()
        torch.set_num_threads(before)


@pytest.mark.slow
def test_actors_run_torch_on_the_threads_the_model_gets_in_process(
    ray_cluster: RayCluster, model_tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the number of actors, local or on the cluster (one CPU per actor), each actor runs
    the model on the count it gets in-process: 1 thread for a narrow model, every core for a wide
    one (chains/llm/cpu_threads.py), so actors compute what in-process computes."""
    from ragcoder.agent.ray_runner import ray_map
    from ragcoder.chains.llm.convert import make_tiny_random_model
    from ragcoder.chains.llm.cpu_threads import NARROW_WIDTH

    monkeypatch.delenv("RAGCODER_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    wide = make_tiny_random_model(tmp_path / "wide", hidden_size=NARROW_WIDTH)
    cores = len(os.sched_getaffinity(0))
    items = [("a", "a"), ("b", "b")]
    for model, threads in ((model_tiny_dir, 1), (wide, cores)):
        assert in_process_threads(model) == threads
        solver = ThreadsSeen(str(model))
        seen = [o.value for o in ray_map(items, solver, address=ray_cluster.address, workers=2)]
        assert seen == [{"threads": threads, "wait": "PASSIVE"}] * 2, model.name
        for workers in (1, 2):
            seen = [o.value for o in ray_map(items, solver, address="local", workers=workers)]
            assert seen == [{"threads": threads, "wait": "PASSIVE"}] * 2, (model.name, workers)
    monkeypatch.setenv("RAGCODER_NUM_THREADS", "1")  # the override reaches the actors
    seen = [o.value for o in ray_map(items, ThreadsSeen(str(wide)), address="local", workers=2)]
    assert seen == [{"threads": 1, "wait": "PASSIVE"}] * 2


# -- the CLI: the same batch in-process and on Ray --------------------------------------------------


def write_tasks(path: Path, count: int) -> Path:
    lines = [
        json.dumps(
            {
                "id": f"add{i}",
                "instruction": f"Write a function add{i}(a) that returns a + {i}.",
                "tests": f"assert add{i}(1) == {1 + i}",
            }
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ragcoder.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=cwd,
        env={**os.environ, **env},
    )


def verdicts(path: Path) -> dict[str, tuple[bool, str]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == len({r["id"] for r in records})
    return {r["id"]: (r["passed"], r["code"]) for r in records}


@pytest.mark.slow
def test_batch_on_ray_gives_what_the_in_process_batch_gives(
    ray_cluster: RayCluster, tmp_path: Path, model_tiny_dir: Path
) -> None:
    """`ragcoder batch --ray ADDRESS --workers 2` and the plain in-process batch: the same ids,
    verdicts and code (the tiny model decodes greedily; runs go to the bubblewrap sandbox)."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 6)
    common = [
        str(tasks),
        "--model",
        str(model_tiny_dir),
        "--sandbox",
        "local",
        "--no-retrieval",
        "--attempts",
        "2",
    ]
    env = {"RAGCODER_MAX_NEW_TOKENS": "16", "RAGCODER_DATA_DIR": str(tmp_path / "data")}
    here = run_cli(["batch", *common, "-o", str(tmp_path / "here.jsonl")], tmp_path, **env)
    assert here.returncode == 0, here.stderr[-2000:]
    there = run_cli(
        ["batch", *common, "-o", str(tmp_path / "ray.jsonl"), "--ray", ray_cluster.address, "--workers", "2"],
        tmp_path,
        **env,
    )
    assert there.returncode == 0, there.stderr[-2000:]
    assert f"ray: {ray_cluster.address}, 2 actor(s)" in there.stdout
    assert verdicts(tmp_path / "ray.jsonl") == verdicts(tmp_path / "here.jsonl")


@pytest.mark.slow
def test_batch_with_ray_local_resumes_after_the_driver_is_killed(
    tmp_path: Path, model_tiny_dir: Path
) -> None:
    """`--ray` alone starts Ray in the driver; SIGKILL the driver mid-run, rerun: every id once."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 8)
    out = tmp_path / "out.jsonl"
    args = [
        "batch",
        str(tasks),
        "-o",
        str(out),
        "--model",
        str(model_tiny_dir),
        "--sandbox",
        "local",
        "--no-retrieval",
        "--attempts",
        "3",
        "--ray",
        "--workers",
        "2",
    ]
    env = {**os.environ, "RAGCODER_MAX_NEW_TOKENS": "48", "RAGCODER_DATA_DIR": str(tmp_path / "data")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "ragcoder.cli.app", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
        assert driver.poll() is None, "the driver ended before it was killed"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    first = len(out.read_text().splitlines())
    assert 2 <= first < 8
    again = run_cli(args, tmp_path, RAGCODER_MAX_NEW_TOKENS="48", RAGCODER_DATA_DIR=str(tmp_path / "data"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {first} task(s) already in" in again.stdout
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"add{i}" for i in range(8))  # none lost, none twice


@pytest.mark.slow
def test_eval_on_ray_scores_like_the_in_process_eval(
    ray_cluster: RayCluster, tmp_path: Path, model_tiny_dir: Path
) -> None:
    """`ragcoder eval humaneval --ray ADDRESS`: the same records (ids, verdicts, code) as in-process."""
    common = [
        "eval",
        "humaneval",
        "--limit",
        "3",
        "--model",
        str(model_tiny_dir),
        "--quantize",
        "none",
        "--sandbox",
        "local",
        "--no-retrieval",
        "--no-repair",
        "--max-new-tokens",
        "16",
    ]
    env = {"RAGCODER_DATA_DIR": str(tmp_path / "data")}
    here = run_cli([*common, "-o", str(tmp_path / "here.jsonl")], tmp_path, **env)
    assert here.returncode == 0, here.stderr[-2000:]
    there = run_cli(
        [*common, "-o", str(tmp_path / "ray.jsonl"), "--ray", ray_cluster.address, "--workers", "2"],
        tmp_path,
        **env,
    )
    assert there.returncode == 0, there.stderr[-2000:]
    assert verdicts(tmp_path / "ray.jsonl") == verdicts(tmp_path / "here.jsonl")
    assert len(verdicts(tmp_path / "ray.jsonl")) == 3
