"""Result files and the runner shared by batch runs and evaluations: append whole lines, cut a
torn tail, resume from the ids on disk, keep going past a job that raises, stop cleanly on Ctrl-C."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from ragcoder.agent.records import ResultsFile, done_ids, read_records
from ragcoder.agent.runner import Job, plan_jobs, run_jobs


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_append_writes_whole_lines_and_records_the_id(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "out.jsonl"  # folders are made
    with ResultsFile.open(out) as results:
        assert results.done == set()
        results.append({"id": "a", "passed": True})
        results.append({"id": 7, "text": "é ✓"})
        assert results.done == {"a", "7"}
    assert out.read_bytes().endswith(b"\n")
    assert lines(out) == [{"id": "a", "passed": True}, {"id": 7, "text": "é ✓"}]
    assert done_ids(out) == {"a", "7"}


def test_torn_tail_is_cut_before_appending(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a"}\n{"id": "b", "pas')  # killed mid-write
    assert [r["id"] for r in read_records(out)] == ["a"]  # a reader skips it
    with ResultsFile.open(out) as results:
        assert results.done == {"a"}
        results.append({"id": "b", "passed": False})
    assert [r["id"] for r in lines(out)] == ["a", "b"]


def test_a_torn_first_line_leaves_an_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a", "co')
    with ResultsFile.open(out) as results:
        assert results.done == set()
    assert out.read_bytes() == b""


def test_read_records_skips_broken_lines_and_rows_without_the_key(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a"}\n[1, 2]\nnot json\n\xff\xfe\n{"task_id": "t"}\n{"id": "b"}\n')
    assert [r["id"] for r in read_records(out)] == ["a", "b"]
    assert [r["task_id"] for r in read_records(out, key="task_id")] == ["t"]
    assert read_records(tmp_path / "missing.jsonl") == []


def test_fresh_empties_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "old"}\n')
    with ResultsFile.open(out, fresh=True) as results:
        assert results.done == set()
        results.append({"id": "new"})
    assert lines(out) == [{"id": "new"}]


def _square(n: int) -> tuple[dict, int]:
    if n == 3:
        raise RuntimeError("three is unlucky")
    return {"square": n * n}, n * n


def test_run_jobs_writes_every_record_and_goes_on_past_an_error(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    seen: list[tuple[str, object]] = []
    jobs = [Job(f"n{n}", n) for n in range(1, 6)] + [Job(None, record={"error": "bad input line"})]
    with ResultsFile.open(out) as results:
        plan = plan_jobs(jobs, results.done)
        assert (plan.total, plan.skipped, plan.to_solve) == (6, 0, 5)
        report = run_jobs(
            plan,
            results,
            _square,
            failed=lambda n: {"n": n},
            workers=3,
            on_record=lambda record, payload: seen.append((record["id"], payload)),
        )
    assert not report.interrupted
    by_id = {r["id"]: r for r in lines(out)}
    assert by_id["n2"] == {"id": "n2", "square": 4}
    assert by_id["n3"] == {"id": "n3", "n": 3, "error": "RuntimeError: three is unlucky"}
    assert by_id["error6"] == {"id": "error6", "error": "bad input line"}  # named by its position
    assert sorted(seen, key=str) == sorted(
        [("n1", 1), ("n2", 4), ("n3", None), ("n4", 16), ("n5", 25), ("error6", None)], key=str
    )


def test_rerun_resumes_only_what_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "n1", "square": 1}\n{"id": "n2", "squ')  # one done, one torn
    solved: list[int] = []

    def solve(n: int) -> tuple[dict, None]:
        solved.append(n)
        return {"square": n * n}, None

    with ResultsFile.open(out) as results:
        plan = plan_jobs([Job(f"n{n}", n) for n in (1, 2, 4)], results.done)
        assert (plan.total, plan.skipped) == (3, 1)
        run_jobs(plan, results, solve)
    assert sorted(solved) == [2, 4]
    assert [r["id"] for r in lines(out)] == ["n1", "n2", "n4"]
    with ResultsFile.open(out) as results:  # and once more: nothing left
        assert plan_jobs([Job(f"n{n}", n) for n in (1, 2, 4)], results.done).jobs == []


def test_ctrl_c_keeps_whole_lines_and_stops(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    gate = threading.Event()

    def solve(n: int) -> tuple[dict, None]:
        if n == 2:
            raise KeyboardInterrupt  # as a Ctrl-C reaching a worker
        if n > 2:
            gate.wait(5)  # never finishes before the interrupt is seen
        return {"n": n}, None

    with ResultsFile.open(out) as results:
        report = run_jobs(plan_jobs([Job(f"n{n}", n) for n in (1, 2, 3)], results.done), results, solve)
    gate.set()
    assert report.interrupted
    assert [r["id"] for r in lines(out)] == ["n1"]


def test_a_ready_record_needs_no_solver(tmp_path: Path) -> None:
    def never(_: object) -> tuple[dict, None]:
        raise AssertionError("nothing should be solved")

    with ResultsFile.open(tmp_path / "out.jsonl") as results:
        plan = plan_jobs([Job(None, record={"error": "x"})], results.done)
        assert plan.to_solve == 0
        run_jobs(plan, results, never)
    assert lines(tmp_path / "out.jsonl") == [{"id": "error1", "error": "x"}]


@pytest.mark.parametrize("workers", [1, 4])
def test_records_come_out_complete_under_concurrency(tmp_path: Path, workers: int) -> None:
    out = tmp_path / "out.jsonl"
    with ResultsFile.open(out) as results:
        plan = plan_jobs([Job(f"n{n}", n) for n in range(40)], results.done)
        run_jobs(plan, results, lambda n: ({"text": "x" * (n * 97)}, None), workers=workers)
    records = lines(out)
    assert sorted(int(r["id"][1:]) for r in records) == list(range(40))
    assert all(len(r["text"]) == int(r["id"][1:]) * 97 for r in records)
