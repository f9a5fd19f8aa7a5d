"""The HumanEval harness with a scripted chat model on real HumanEval tasks (hidden tests run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragcoder.agent.loop import CodeAgent
from ragcoder.finetune.evaluate import run_eval, score_hidden, select_problems
from ragcoder.finetune.humaneval import (
    TestSplitLeak,
    find_test_leak,
    guard_not_test,
    load_problems,
    program_for,
    split_of,
)
from ragcoder.finetune.report import read_records, summarise, write_report

from tests.fakes import fenced, scripted

# HumanEval/0 has_close_elements, /2 truncate_number, /3 below_zero (dev split)
GOOD_0 = """
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])
"""
GOOD_2 = """
def truncate_number(number: float) -> float:
    return number % 1.0
"""
WRONG_3 = """
def below_zero(operations):
    return True  # always
"""
# passes the docstring example (visible) but not the hidden tests: the agent believes it passed
OVERFIT_3 = """
def below_zero(operations):
    return -4 in operations  # fits both docstring examples, not the task
"""
FIXED_3 = """
def below_zero(operations):
    balance = 0
    for op in operations:
        balance += op
        if balance < 0:
            return True
    return False
"""


def by_id(*ids: str):
    problems = {p.task_id: p for p in load_problems("all")}
    return [problems[i] for i in ids]


def test_split_is_fixed_half_and_half():
    dev, test = load_problems("dev"), load_problems("test")
    assert [p.index for p in dev] == list(range(82))
    assert [p.index for p in test] == list(range(82, 164))
    assert split_of("HumanEval/81") == "dev" and split_of("HumanEval/82") == "test"
    assert len(select_problems("dev", 5)) == 5
    chosen = select_problems("dev", tasks="6, HumanEval/1,5")
    assert [p.task_id for p in chosen] == ["HumanEval/1", "HumanEval/5", "HumanEval/6"]
    with pytest.raises(ValueError, match="HumanEval/90 not in the dev split"):
        select_problems("dev", tasks="1,90")  # rerunning failures never reaches into the test split


def test_guard_refuses_test_split_ids_and_text():
    guard_not_test("HumanEval/81")
    guard_not_test("my-task")
    with pytest.raises(TestSplitLeak):
        guard_not_test("HumanEval/82")
    test_prompt = load_problems("test")[3].prompt
    assert find_test_leak("Write this:\n" + test_prompt) == load_problems("test")[3].task_id
    assert find_test_leak(load_problems("dev")[0].prompt) is None
    assert find_test_leak("def add(a, b):\n    return a + b\n") is None


def test_program_for_adds_prompt_imports_and_helpers():
    (p0,) = by_id("HumanEval/0")
    without_import = GOOD_0.replace("from typing import List", "")
    assert program_for(p0, without_import).startswith("from typing import List")
    assert program_for(p0, GOOD_0) == GOOD_0  # nothing missing: unchanged
    (p10,) = by_id("HumanEval/10")  # make_palindrome uses the prompt's is_palindrome helper
    body_only = "    return string + string[::-1]\n"
    assert "def is_palindrome" in program_for(p10, body_only)
    assert "def make_palindrome" in program_for(p10, body_only)


def test_score_hidden_runs_the_hidden_check(trusted_sandbox):
    p0, p3 = by_id("HumanEval/0", "HumanEval/3")
    assert score_hidden(trusted_sandbox, p0, GOOD_0).passed
    wrong = score_hidden(trusted_sandbox, p3, WRONG_3)
    assert not wrong.passed and wrong.detail
    canonical = score_hidden(trusted_sandbox, p3, p3.canonical_code)
    assert canonical.passed, canonical.detail


def _agent(trusted_sandbox, attempts: int) -> tuple[CodeAgent, object]:
    model = scripted(
        [
            ("truncate_number", fenced(GOOD_2)),
            ("has_close_elements", fenced(GOOD_0)),
            ("# always", fenced(FIXED_3)),  # the repair prompt shows the failing code
            ("below_zero", fenced(WRONG_3)),
        ]
    )
    return CodeAgent(model, trusted_sandbox, max_attempts=attempts), model


def test_run_eval_scores_each_attempt_and_resumes(tmp_path: Path, trusted_sandbox):
    agent, model = _agent(trusted_sandbox, attempts=3)
    problems = by_id("HumanEval/0", "HumanEval/2", "HumanEval/3")
    out = tmp_path / "results.jsonl"
    summary = run_eval(agent, problems, out)
    assert (summary.passed, summary.failed, summary.errors) == (3, 0, 0)
    records = {r["task_id"]: r for r in read_records(out)}
    assert all(r["split"] == "dev" for r in records.values())
    assert all("check(candidate)" not in prompt for prompt in model.prompts)  # hidden tests never shown
    r3 = records["HumanEval/3"]
    assert [a["passed"] for a in r3["attempts"]] == [False, True]
    assert r3["attempts"][1]["kind"] == "repair"
    assert 0 < r3["bleu"] <= 1 and 0 < r3["rouge_l"] <= 1
    assert r3["codebleu"] is not None
    stats = summarise(list(records.values()))
    assert stats.pass_at[1] == 1.0
    assert stats.pass_after_attempt == pytest.approx([2 / 3, 1.0])
    # resume: nothing left to do, nothing appended
    again = run_eval(agent, problems, out)
    assert again.skipped == 3 and again.to_run == 0
    assert len(out.read_text().splitlines()) == 3


def test_single_shot_and_hidden_overfit(tmp_path: Path, trusted_sandbox):
    model = scripted([("below_zero", fenced(OVERFIT_3))])
    agent = CodeAgent(model, trusted_sandbox, max_attempts=1)
    out = tmp_path / "r.jsonl"
    run_eval(agent, by_id("HumanEval/3"), out)
    (record,) = read_records(out)
    assert record["visible_passed"] is True  # the docstring example passes...
    assert record["passed"] is False  # ...the hidden tests do not
    assert len(record["attempts"]) == 1


def test_samples_and_report(tmp_path: Path, trusted_sandbox):
    agent, _ = _agent(trusted_sandbox, attempts=1)
    out = tmp_path / "r.jsonl"
    summary = run_eval(agent, by_id("HumanEval/2", "HumanEval/3"), out, samples=2, workers=2)
    assert summary.to_run == 4
    ids = sorted(r["id"] for r in read_records(out))
    assert ids == ["HumanEval/2#0", "HumanEval/2#1", "HumanEval/3#0", "HumanEval/3#1"]
    report = tmp_path / "report.md"
    stats = write_report(out, report, title="fake", command="ragcoder eval humaneval")
    assert stats.pass_at == {1: 0.5, 2: 0.5}
    text = report.read_text()
    assert "pass@2" in text and "r_pb" in text
    png = report.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torn_last_line_is_cut_and_rerun(tmp_path: Path, trusted_sandbox):
    agent, _ = _agent(trusted_sandbox, attempts=1)
    out = tmp_path / "r.jsonl"
    run_eval(agent, by_id("HumanEval/2"), out)
    with out.open("a") as handle:
        handle.write('{"id": "HumanEval/0", "task_id": "HumanEval/0", "pas')  # killed mid-write
    run_eval(agent, by_id("HumanEval/0", "HumanEval/2"), out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == ["HumanEval/0", "HumanEval/2"]


def test_demo_block_is_not_scored(trusted_sandbox):
    from ragcoder.finetune.humaneval import strip_main_block

    (p2,) = by_id("HumanEval/2")
    with_demo = GOOD_2 + '\nif __name__ == "__main__":\n    assert truncate_number(3.5) == 99\n'
    assert "__main__" not in strip_main_block(with_demo)
    assert score_hidden(trusted_sandbox, p2, with_demo).passed


def test_rescore_rewrites_verdicts(tmp_path: Path, trusted_sandbox):
    from ragcoder.finetune.evaluate import rescore

    agent, _ = _agent(trusted_sandbox, attempts=1)
    out = tmp_path / "r.jsonl"
    run_eval(agent, by_id("HumanEval/2"), out)
    record = json.loads(out.read_text())
    record["passed"] = False  # as if scored by an older, stricter harness
    out.write_text(json.dumps(record) + "\n")
    assert rescore(out, trusted_sandbox) == 1
    assert json.loads(out.read_text())["passed"] is True
