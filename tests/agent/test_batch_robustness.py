"""Batch and eval data as a hostile or careless user meets it (issue 20, point 7): every string is
written as valid JSON, ids are unique, one run per results file, and every bad path or empty
input fails in one line before the sandbox or the model starts. Nothing finished is lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from ragcoder.agent import CodeAgent
from ragcoder.agent.batch import run_batch
from ragcoder.agent.records import ResultsFile, check_writable, done_ids
from ragcoder.agent.tasks import clean_text, read_tasks

from ragcoder.cli.app import cli
from ragcoder.cli.commands import finetune_cmd
from ragcoder.errors import ResultsFileBusy, ResultsFileError
from tests.fakes import ScriptedChatModel, fenced, scripted

GOOD = fenced("def one():\n    return 1\n")
SURROGATE = "\udcff"  # what a byte that is not UTF-8 becomes under surrogateescape


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def task(task_id: str, instruction: str = "Write one().") -> dict:
    return {"id": task_id, "instruction": instruction, "tests": "assert one() == 1"}


class RaisesOn(ScriptedChatModel):
    """Raises ``error`` for prompts that contain ``trigger``; answers by its rules otherwise."""

    trigger: str = "EXPLODE"
    error: str = ""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        if any(self.trigger in str(m.content) for m in messages):
            self.prompts.append("raised")
            raise RuntimeError(self.error)
        return super()._generate(messages, stop, run_manager, **kwargs)


# -- strings that are not UTF-8 -------------------------------------------------------------------


def test_a_lone_surrogate_in_an_exception_is_written_escaped_and_the_batch_goes_on(
    tmp_path: Path, trusted_sandbox
) -> None:
    prompts = jsonl(tmp_path / "p.jsonl", [task("a"), task("b", "EXPLODE one()."), task("c")])
    out = tmp_path / "out.jsonl"
    model = RaisesOn(rules=[("", GOOD)], error=f"bad byte {SURROGATE} [/red]")
    summary = run_batch(CodeAgent(model, trusted_sandbox), read_tasks(prompts), out)
    assert (summary.passed, summary.errors) == (2, 1)
    by_id = {r["id"]: r for r in records(out)}
    assert by_id["b"]["error"] == "RuntimeError: bad byte \ufffd [/red]"
    assert by_id["a"]["passed"] and by_id["c"]["passed"]  # the task after it ran
    calls = len(model.prompts)
    again = run_batch(CodeAgent(model, trusted_sandbox), read_tasks(prompts), out)
    assert again.skipped == 3 and len(model.prompts) == calls  # the rerun does not hit it again


def test_an_id_with_a_surrogate_escape_is_written_and_resumed(tmp_path: Path, trusted_sandbox) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "x\\udcff", "instruction": "Write one().", "tests": "assert one() == 1"}\n')
    out = tmp_path / "out.jsonl"
    agent = CodeAgent(scripted([("", GOOD)]), trusted_sandbox)
    assert run_batch(agent, read_tasks(prompts), out).passed == 1
    assert [r["id"] for r in records(out)] == ["x\ufffd"]
    assert run_batch(agent, read_tasks(prompts), out).skipped == 1  # the cleaned id matches on a rerun


def test_eval_writes_a_surrogate_error_escaped_and_scores_the_rest(tmp_path: Path, trusted_sandbox) -> None:
    from ragcoder.finetune.evaluate import run_eval
    from ragcoder.finetune.humaneval import load_problems

    problems = {p.task_id: p for p in load_problems("dev")}
    two = fenced("def truncate_number(number: float) -> float:\n    return number % 1.0\n")
    model = RaisesOn(rules=[("", two)], trigger="has_close_elements", error=f"boom {SURROGATE}")
    out = tmp_path / "eval.jsonl"
    summary = run_eval(
        CodeAgent(model, trusted_sandbox, max_attempts=1),
        [problems["HumanEval/0"], problems["HumanEval/2"]],
        out,
    )
    assert (summary.errors, summary.passed) == (1, 1)
    by_id = {r["id"]: r for r in records(out)}
    assert by_id["HumanEval/0"]["error"] == "RuntimeError: boom \ufffd"
    assert by_id["HumanEval/0"]["passed"] is False and by_id["HumanEval/2"]["passed"] is True


def test_a_file_name_that_is_not_utf8_becomes_a_usable_id(tmp_path: Path, trusted_sandbox) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / os.fsdecode(b"bad\xff.txt")).write_text("Write one() returning 1.")
    (folder / "good.txt").write_text("Write one() returning 1.")
    out = tmp_path / "out.jsonl"
    summary = run_batch(CodeAgent(scripted([("", GOOD)]), trusted_sandbox), read_tasks(folder), out)
    assert summary.done == 2 and summary.errors == 0
    assert sorted(r["id"] for r in records(out)) == ["bad\ufffd", "good"]


def test_ids_that_differ_only_in_undecodable_bytes_are_one_id(tmp_path: Path, trusted_sandbox) -> None:
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in (b"t\xfe.txt", b"t\xff.txt"):  # both clean to "t\ufffd": the second is a repeat
        (folder / os.fsdecode(name)).write_text("Write one() returning 1.")
    out = tmp_path / "out.jsonl"
    summary = run_batch(CodeAgent(scripted([("", GOOD)]), trusted_sandbox), read_tasks(folder), out)
    assert (summary.done, summary.errors) == (2, 1)
    (error,) = [r for r in records(out) if "error" in r]
    assert "duplicate id 't\ufffd'" in error["error"]


def test_every_string_is_cleaned_keys_and_odd_values_too(tmp_path: Path) -> None:
    with ResultsFile.open(tmp_path / "out.jsonl") as results:
        written = results.append({"id": "k", f"key{SURROGATE}": [f"v{SURROGATE}", {1: {2}}], "n": 1.5})
    assert written["key\ufffd"] == ["v\ufffd", {"1": "{2}"}] and written["n"] == 1.5
    assert records(tmp_path / "out.jsonl") == [written]
    assert clean_text("plain ✓") == "plain ✓"


# -- unique ids ---------------------------------------------------------------------------------


def test_a_duplicate_id_becomes_an_error_naming_both_lines(tmp_path: Path, trusted_sandbox) -> None:
    prompts = jsonl(tmp_path / "p.jsonl", [task("a"), task("b"), task("a", "Write one() again.")])
    out = tmp_path / "out.jsonl"
    model = scripted([("", GOOD)])
    summary = run_batch(CodeAgent(model, trusted_sandbox), read_tasks(prompts), out)
    assert (summary.passed, summary.errors) == (2, 1)
    (error,) = [r for r in records(out) if "error" in r]
    assert f"{prompts}:3" in error["error"] and f"{prompts}:1" in error["error"]
    assert "duplicate id 'a'" in error["error"] and error["id"] == "error3"
    assert not any("again" in p for p in model.prompts)  # the repeat was not run under the same id
    again = run_batch(CodeAgent(model, trusted_sandbox), read_tasks(prompts), out)
    assert again.skipped == 3 and len(records(out)) == 3  # and it is not written twice


def test_a_task_named_like_a_generated_error_id_still_runs(tmp_path: Path, trusted_sandbox) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("{not json\n" + json.dumps(task("error1")) + "\n")  # line 1 is error1's position
    out = tmp_path / "out.jsonl"
    summary = run_batch(CodeAgent(scripted([("", GOOD)]), trusted_sandbox), read_tasks(prompts), out)
    assert (summary.passed, summary.errors) == (1, 1)
    by_id = {r["id"]: r for r in records(out)}
    assert by_id["error1"]["passed"] is True  # the user's task keeps its id...
    assert "bad JSON" in by_id["error1-2"]["error"]  # ...and the generated one steps aside
    assert done_ids(out) == {"error1", "error1-2"}


# -- one run per results file ------------------------------------------------------------------


def test_a_second_writer_on_the_same_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with ResultsFile.open(out) as first:
        first.append({"id": "a"})
        with pytest.raises(
            ResultsFileBusy, match=rf"out\.jsonl is being written by another run \(pid {os.getpid()}\)"
        ):
            ResultsFile.open(out)
        with pytest.raises(ResultsFileBusy):
            ResultsFile.open(out, fresh=True)  # --fresh must not wipe a file another run is writing
    with ResultsFile.open(out) as second:  # released on close
        assert second.done == {"a"}


def test_a_second_batch_on_the_same_output_stops_in_one_line(tmp_path: Path) -> None:
    prompts, out = jsonl(tmp_path / "p.jsonl", [task("a")]), tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from ragcoder.agent.records import ResultsFile; f = ResultsFile.open(Path(sys.argv[1])); "
            "print('locked', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = _ragcoder("batch", str(prompts), "-o", str(out), "--model", "no-such-model")
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[0] == f"error: {out} is being written by another run (pid {holder.pid})"
    assert "Traceback" not in proc.stderr and out.read_bytes() == b""


# -- bad paths and empty input fail before anything heavy starts ---------------------------------


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building an agent (sandbox, model) fails the test: the command must stop before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the sandbox and the model must not start")

    monkeypatch.setattr("ragcoder.agent.config.build_agent", refuse)
    monkeypatch.setattr(finetune_cmd, "build_eval_agent", refuse)


def _bad_paths(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    return {
        "a folder": (tmp_path / "folder", "is a folder"),
        "under a file": (tmp_path / "file" / "out.jsonl", f"{tmp_path / 'file'} is a file"),
        "deeper under a file": (tmp_path / "file" / "a" / "out.jsonl", f"{tmp_path / 'file'} is a file"),
    }


@pytest.mark.parametrize("case", ["a folder", "under a file", "deeper under a file"])
@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_batch_refuses_a_bad_path_before_the_model_loads(
    tmp_path: Path, no_model, case: str, flag: str
) -> None:
    prompts = jsonl(tmp_path / "p.jsonl", [task("a")])
    path, why = _bad_paths(tmp_path)[case]
    args = ["-o", str(tmp_path / "out.jsonl"), "--report", str(tmp_path / "r.md")]
    args[args.index(flag) + 1] = str(path)
    result = CliRunner().invoke(cli, ["batch", str(prompts), *args])
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("error: ") and why in first and flag in first
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("case", ["a folder", "under a file"])
@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_eval_refuses_a_bad_path_before_the_model_loads(
    tmp_path: Path, no_model, case: str, flag: str
) -> None:
    path, why = _bad_paths(tmp_path)[case]
    args = ["-o", str(tmp_path / "out.jsonl"), "--report", str(tmp_path / "r.md")]
    args[args.index(flag) + 1] = str(path)
    result = CliRunner().invoke(cli, ["eval", "humaneval", "--limit", "1", *args])
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("error: ") and why in first and flag in first


def test_eval_refuses_a_busy_output_before_the_model_loads(tmp_path: Path, no_model) -> None:
    out = tmp_path / "out.jsonl"
    with ResultsFile.open(out):
        result = CliRunner().invoke(cli, ["eval", "humaneval", "--limit", "1", "-o", str(out), "--fresh"])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {out} is being written by another run (pid {os.getpid()})")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_batch_file_is_an_error_before_the_model_loads(
    tmp_path: Path, no_model, content: str
) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(content)
    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"error: {prompts} holds no tasks: ")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_finished_batch_reruns_without_loading_the_model(tmp_path: Path, no_model) -> None:
    prompts, out = jsonl(tmp_path / "p.jsonl", [task("a")]), tmp_path / "out.jsonl"
    out.write_text(json.dumps({"id": "a", "passed": True}) + "\n")
    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "nothing to do: all 1 tasks are in" in result.output


def test_only_bad_lines_are_recorded_without_loading_the_model(tmp_path: Path, no_model) -> None:
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    prompts.write_text("{not json\n")
    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "bad JSON" in records(out)[0]["error"]


def _ragcoder(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "ragcoder.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _read_only(folder: Path) -> tuple[str, ...]:
    """A command prefix under which ``folder`` is read-only: a read-only bind mount (bubblewrap),
    or its permission bits when not root (root writes through them)."""
    bwrap = shutil.which("bwrap")
    if bwrap:
        return (bwrap, "--bind", "/", "/", "--dev", "/dev", "--ro-bind", str(folder), str(folder))
    if os.geteuid() == 0:
        pytest.skip("needs bubblewrap (apt-get install bubblewrap) to make a read-only place as root")
    folder.chmod(0o555)
    return ()


@pytest.mark.parametrize("command", ["batch", "eval"])
@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_a_read_only_place_is_one_line_before_the_model_loads(
    tmp_path: Path, command: str, flag: str
) -> None:
    prompts = jsonl(tmp_path / "p.jsonl", [task("a")])
    locked = tmp_path / "ro"
    locked.mkdir()
    args = ["-o", str(tmp_path / "out.jsonl"), "--report", str(tmp_path / "r.md")]
    args[args.index(flag) + 1] = str(locked / "target")
    head = ["batch", str(prompts)] if command == "batch" else ["eval", "humaneval", "--limit", "1"]
    started = time.perf_counter()
    # an unknown model: had the paths been checked after loading, this would be the error instead
    proc = _ragcoder(*head, *args, "--model", "no-such-model", prefix=_read_only(locked))
    assert proc.returncode == 1, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert (
        first.startswith(f"error: cannot write {flag} {locked / 'target'}: ") and "no-such-model" not in first
    )
    assert "Traceback" not in proc.stderr and time.perf_counter() - started < 60


def test_check_writable_leaves_no_trace(tmp_path: Path) -> None:
    target = tmp_path / "new" / "report.md"
    check_writable(target, "--report")
    assert list((tmp_path / "new").iterdir()) == []  # the probe is gone, the report not yet made
    with pytest.raises(ResultsFileError, match="is a folder"):
        check_writable(tmp_path, "--report")


# -- what the terminal shows cannot stop a run --------------------------------------------------


class _KeepOpen:
    def __init__(self, inner):
        self.inner, self.name = inner, "unsafe-local"

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_ids_and_errors_that_look_like_markup_are_shown_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted_sandbox
) -> None:
    model = RaisesOn(rules=[("", GOOD)], error=f"KeyError: '[/bold]' {SURROGATE}")

    def build(config, *, workers=1, **kwargs):
        return CodeAgent(model, _KeepOpen(trusted_sandbox), max_attempts=1)

    monkeypatch.setattr("ragcoder.agent.config.build_agent", build)
    prompts = jsonl(tmp_path / "p.jsonl", [task("t0"), task("[/bold]", "EXPLODE it."), task("[red]x")])
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(out), "--show-code"])
    assert result.exit_code == 0, result.output
    assert "[t0] PASSED" in result.output and "[[red]x] PASSED" in result.output
    assert "[[/bold]] error: RuntimeError: KeyError: '[/bold]' \ufffd" in result.output
    assert sorted(r["id"] for r in records(out)) == ["[/bold]", "[red]x", "t0"]


# -- the real path: the CLI with a real model and the Docker sandbox ------------------------------


@pytest.mark.slow
@pytest.mark.docker
def test_real_batch_holds_its_file_records_a_duplicate_and_resumes_without_the_model(tmp_path: Path) -> None:
    from ragcoder.chains.llm.convert import install_model

    from tests.conftest import docker_or_skip

    docker_or_skip()
    install_model("smollm2-135m-instruct")  # a no-op once installed
    prompts = jsonl(tmp_path / "p.jsonl", [task("a"), task("b"), task("a", "Write two().")])
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "ragcoder.cli.app",
        "batch",
        str(prompts),
        "-o",
        str(out),
        "--model",
        "smollm2-135m-instruct",
        "--sandbox",
        "docker",
        "--no-retrieval",
        "--attempts",
        "1",
    ]
    env = {**os.environ, "RAGCODER_MAX_NEW_TOKENS": "48", "COLUMNS": "120"}
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:  # opened and locked before the model loads
        time.sleep(0.05)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stdout[-2000:] + stderr[-2000:]
    assert second.returncode == 1
    assert second.stderr.splitlines()[0] == f"error: {out} is being written by another run (pid {first.pid})"
    by_id = {r["id"]: r for r in records(out)}
    assert set(by_id) == {"a", "b", "error3"}  # every task once, the repeated id as an error
    assert {"passed", "attempts"} <= set(by_id["a"]) and "duplicate id 'a'" in by_id["error3"]["error"]
    started = time.perf_counter()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "nothing to do: all 3 tasks are in" in again.stdout
    assert "sandbox:" not in again.stdout and time.perf_counter() - started < 30  # no sandbox, no model
    assert len(records(out)) == 3


def test_batch_shows_each_failed_attempt_as_it_happens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trusted_sandbox
) -> None:
    model = scripted([("got 2", GOOD), ("", fenced("def one():\n    return 2\n"))])

    def build(config, *, workers=1, **kwargs):
        return CodeAgent(model, _KeepOpen(trusted_sandbox), max_attempts=2)

    monkeypatch.setattr("ragcoder.agent.config.build_agent", build)
    prompts, out = jsonl(tmp_path / "p.jsonl", [task("t[1]")]), tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(prompts), "-o", str(out)])
    assert result.exit_code == 0, result.output
    failed = "[t[1]] attempt 1 failed: 0/1 tests passed; assert one() == 1: got 2, expected 1"
    assert failed in result.output and "[t[1]] PASSED" in result.output
    assert result.output.index(failed) < result.output.index("[t[1]] PASSED")
