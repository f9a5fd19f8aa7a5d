"""The click commands: `eval humaneval` (agent replaced by a scripted one), `eval report`, data commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from ragcoder.agent.loop import CodeAgent

from ragcoder.cli.commands import finetune_cmd
from ragcoder.cli.commands.finetune_cmd import eval_group, finetune_group
from tests.fakes import fenced, scripted

GOOD_2 = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"


class _KeepOpen:
    """Wraps the shared trusted sandbox so the command's `with agent:` does not close it."""

    def __init__(self, inner):
        self.inner, self.name = inner, "unsafe-local"

    def run_tests(self, *args, **kwargs):
        return self.inner.run_tests(*args, **kwargs)

    def run(self, *args, **kwargs):
        return self.inner.run(*args, **kwargs)

    def close(self) -> None:
        pass


@pytest.fixture
def fake_agent(monkeypatch, trusted_sandbox):
    seen: dict = {}

    def build(config, *, workers, samples, temperature, quantize="auto"):
        seen.update(config=config, workers=workers, samples=samples)
        model = scripted([("truncate_number", fenced(GOOD_2)), ("", fenced("def nope():\n    return 0\n"))])
        seen["model"] = model
        return CodeAgent(model, _KeepOpen(trusted_sandbox), max_attempts=config.max_attempts)

    monkeypatch.setattr(finetune_cmd, "build_eval_agent", build)
    return seen


def test_eval_humaneval_writes_results_and_report(tmp_path: Path, fake_agent):
    out, report = tmp_path / "r.jsonl", tmp_path / "report.md"
    args = [
        "humaneval",
        "--split",
        "dev",
        "--limit",
        "3",
        "--no-repair",
        "--no-retrieval",
        "-o",
        str(out),
        "--report",
        str(report),
    ]
    result = CliRunner().invoke(eval_group, args)
    assert result.exit_code == 0, result.output
    assert fake_agent["config"].max_attempts == 1 and fake_agent["config"].retrieval == "never"
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["task_id"]: r["passed"] for r in records} == {
        "HumanEval/0": False,
        "HumanEval/1": False,
        "HumanEval/2": True,
    }
    assert "| pass@1 | 33.3% (1/3) |" in report.read_text()
    assert report.with_suffix(".png").is_file()
    again = CliRunner().invoke(eval_group, args)  # resumes: nothing re-run
    assert "resuming: 3 record(s)" in again.output
    assert len(out.read_text().splitlines()) == 3


def test_eval_humaneval_asked_in_words_with_api_guesses(tmp_path: Path, fake_agent):
    out = tmp_path / "w.jsonl"
    flags = "--tasks 2 --no-repair --prompt-style words --guess-apis -o"
    args = ["humaneval", *flags.split(), str(out)]
    result = CliRunner().invoke(eval_group, args)
    assert result.exit_code == 0, result.output
    assert fake_agent["config"].retrieval_guess is True and "retrieval: auto + API guesses" in result.output
    prompt = fake_agent["model"].prompts[0]
    assert "Write a Python function `truncate_number(number: float) -> float`." in prompt
    assert "def truncate_number" not in prompt
    assert "HumanEval dev (tasks 2) asked in words" in result.output
    assert json.loads(out.read_text())["passed"] is True


def test_eval_report_command(tmp_path: Path, fake_agent):
    out = tmp_path / "r.jsonl"
    CliRunner().invoke(eval_group, ["humaneval", "--limit", "3", "--attempts", "2", "-o", str(out)])
    result = CliRunner().invoke(eval_group, ["report", str(out), "--report", str(tmp_path / "x.md")])
    assert result.exit_code == 0, result.output
    assert "pass@1 33.3% over 3 task(s)" in result.output


def test_data_commands(tmp_path: Path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"prompt": "Add.", "completion": "def add(a, b):\n    return a + b"})
        + "\n"
        + json.dumps({"prompt": "Bad."})
        + "\n"
    )
    result = CliRunner().invoke(
        finetune_group, ["data", "pairs", str(pairs), "-o", str(tmp_path / "a.jsonl")]
    )
    assert result.exit_code == 0, result.output
    assert "1 written; skipped: invalid: 1" in result.output
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.py").write_text(
        'def twice(x):\n    """Return the value doubled, for any number or sequence."""\n'
        "    y = x\n    y = y + x\n    return y\n"
    )
    result = CliRunner().invoke(finetune_group, ["data", "mine", str(src), "-o", str(tmp_path / "b.jsonl")])
    assert "1 written" in result.output, result.output
    results = tmp_path / "eval.jsonl"
    results.write_text(
        "".join(
            json.dumps(
                {
                    "id": "HumanEval/3",
                    "task_id": "HumanEval/3",
                    "instruction": "i",
                    "code": f"def f():\n    return {n}\n",
                    "passed": True,
                    "visible_passed": True,
                    "attempts": [{}] * n,
                }
            )
            + "\n"
            for n in (1, 2)
        )
    )
    result = CliRunner().invoke(
        finetune_group, ["data", "traces", str(results), "--per-task", "1", "-o", str(tmp_path / "c.jsonl")]
    )
    assert "1 written; skipped: over 1 per task: 1" in result.output, result.output
    assert "return 2" in (tmp_path / "c.jsonl").read_text()  # the repaired solution is the one kept
    result = CliRunner().invoke(
        finetune_group, ["data", "traces", str(results), "--repaired-only", "-o", str(tmp_path / "d.jsonl")]
    )
    assert "1 written" in result.output and "return 1" not in (tmp_path / "d.jsonl").read_text()


def test_eval_compare_uses_common_tasks(tmp_path: Path, fake_agent):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    CliRunner().invoke(eval_group, ["humaneval", "--limit", "3", "--no-repair", "-o", str(a)])
    CliRunner().invoke(eval_group, ["humaneval", "--limit", "2", "-o", str(b)])
    result = CliRunner().invoke(eval_group, ["compare", f"single={a}", f"loop={b}"])
    assert result.exit_code == 0, result.output
    assert "| single | 2 | 0/2 = 0.0% |" in result.output
    missing = CliRunner().invoke(eval_group, ["compare", f"single={a}", f"loop={tmp_path / 'nope.jsonl'}"])
    assert missing.exit_code == 2 and "nope.jsonl: no such results file" in missing.output


def test_eval_takes_the_agent_flags_solve_and_batch_take(tmp_path: Path, fake_agent):
    out = tmp_path / "r.jsonl"
    args = [
        "humaneval",
        "--tasks",
        "2",
        "--model",
        "m",
        "--adapter",
        "ad",
        "--index-path",
        "ix",
        "--retrieval",
        "always",
        "--attempts",
        "3",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(eval_group, args)
    assert result.exit_code == 0, result.output
    config = fake_agent["config"]
    assert (config.model, config.adapter, config.index_path) == ("m", "ad", "ix")
    assert (config.retrieval, config.max_attempts, config.sandbox) == ("always", 3, "docker")
    assert config.sources["sandbox"] == "flag"  # eval pins docker: the hidden tests run there
    single = CliRunner().invoke(eval_group, [*args[:-2], "--no-repair", "-o", str(tmp_path / "s.jsonl")])
    assert single.exit_code == 0 and fake_agent["config"].max_attempts == 1  # --no-repair wins
