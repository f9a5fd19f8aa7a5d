"""Batch runs: results appended as they finish, reruns resume, bad lines become error records."""

from __future__ import annotations

import json
from pathlib import Path

from ragcoder.agent import CodeAgent
from ragcoder.agent.batch import run_batch
from ragcoder.agent.records import done_ids
from ragcoder.agent.tasks import read_jsonl_tasks

from tests.fakes import fenced, scripted

GOOD = fenced("def one():\n    return 1\n")


def write_prompts(path: Path) -> None:
    lines = [
        json.dumps({"id": "a", "instruction": "Write one().", "tests": "assert one() == 1"}),
        "{not json",
        json.dumps({"id": "b", "tests": "assert True"}),  # no instruction
        json.dumps({"id": "c", "instruction": "Write one() again.", "tests": ["assert one() == 1"]}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": "d", "instruction": "\xff\xfe"}\n')


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_lines_become_error_records_and_the_run_goes_on(tmp_path: Path, trusted_sandbox) -> None:
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    write_prompts(prompts)
    summary = run_batch(CodeAgent(scripted([("", GOOD)]), trusted_sandbox), read_jsonl_tasks(prompts), out)
    recs = records(out)
    assert [r["id"] for r in recs][:1] == ["a"] and recs[0]["passed"] is True
    errors = [r["error"] for r in recs if "error" in r]
    assert any("p.jsonl:2: bad JSON" in e for e in errors)
    assert any("p.jsonl:3: missing 'instruction'" in e for e in errors)
    assert any("p.jsonl:5: not UTF-8" in e for e in errors)
    assert (summary.passed, summary.errors) == (2, 3)


def test_rerun_resumes_without_duplicates(tmp_path: Path, trusted_sandbox) -> None:
    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    write_prompts(prompts)
    model = scripted([("", GOOD)])
    agent = CodeAgent(model, trusted_sandbox)
    run_batch(agent, read_jsonl_tasks(prompts), out)
    calls = len(model.prompts)
    # simulate a kill in the middle of writing a line: a torn tail
    with out.open("a") as handle:
        handle.write('{"id": "zz", "passed": tr')
    second = run_batch(agent, read_jsonl_tasks(prompts), out)
    assert second.skipped == 5 and second.done == 0
    assert len(model.prompts) == calls  # nothing was generated again
    ids = [r["id"] for r in records(out)]
    assert len(ids) == len(set(ids)) == 5
    assert done_ids(out) == set(ids)


def test_ctrl_c_keeps_finished_lines_and_a_rerun_resumes(tmp_path: Path, trusted_sandbox) -> None:
    """Ctrl-C mid-run: what finished is on disk, whole; the rerun does only what is left."""
    from tests.fakes import ScriptedChatModel

    class InterruptedOnce(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            if len(self.prompts) == 1 and not getattr(self, "_fired", False):
                object.__setattr__(self, "_fired", True)
                raise KeyboardInterrupt
            return super()._generate(messages, stop, run_manager, **kwargs)

    prompts, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"t{i}", "instruction": "Write one().", "tests": "assert one() == 1"}) + "\n"
            for i in range(4)
        )
    )
    model = InterruptedOnce(rules=[("", GOOD)])
    first = run_batch(CodeAgent(model, trusted_sandbox, samples=1), read_jsonl_tasks(prompts), out)
    assert first.interrupted and [r["id"] for r in records(out)] == ["t0"]
    second = run_batch(CodeAgent(model, trusted_sandbox, samples=1), read_jsonl_tasks(prompts), out)
    assert not second.interrupted and second.skipped == 1 and second.passed == 3
    assert sorted(r["id"] for r in records(out)) == ["t0", "t1", "t2", "t3"]


def test_the_report_has_a_row_per_task_with_the_failing_check(tmp_path: Path, trusted_sandbox) -> None:
    from ragcoder.cli.report import write_markdown_report

    prompts, out, report = tmp_path / "p.jsonl", tmp_path / "out.jsonl", tmp_path / "report.md"
    write_prompts(prompts)
    with prompts.open("a") as handle:
        handle.write(
            json.dumps({"id": "x|y", "instruction": "Write one().", "tests": "assert one() == 2"}) + "\n"
        )
    agent = CodeAgent(scripted([("", GOOD)]), trusted_sandbox, max_attempts=1)
    summary = run_batch(agent, read_jsonl_tasks(prompts), out)
    write_markdown_report(summary, report, title="t", results=out)
    rows = {line.split(" | ")[0]: line for line in report.read_text().splitlines() if line.startswith("| ")}
    assert rows["| a"].startswith("| a | passed (verified) | 1 | ")  # the tests it was given passed
    assert rows["| x\\|y"].startswith("| x\\|y | failed | 1 | ")  # ids literally, pipes escaped
    assert "assert one() == 2: got 1, expected 2 |" in rows["| x\\|y"]
    assert any(" | error | 0 | " in line and "bad JSON" in line for line in rows.values())


def test_the_loading_spinner_counts_seconds_and_stays_quiet_off_a_terminal(capsys) -> None:
    import re

    from ragcoder.cli.report import _Elapsed, loading

    assert re.fullmatch(r"loading the model \(\d+ s\)", _Elapsed("loading the model").__rich__())
    with loading("loading the model"):
        pass
    assert capsys.readouterr().err == ""  # pytest's stderr is no terminal: no spinner frames
