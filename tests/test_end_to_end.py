"""The whole path with real parts: a real local model writes code, real Docker runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent import CodeAgent, Task

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def test_smollm2_solves_a_simple_instruction_in_docker(smollm2_chat, docker_sandbox) -> None:
    task = Task(
        id="add",
        instruction="Write a Python function add(a, b) that returns the sum of a and b.",
        tests="assert add(2, 3) == 5\nassert add(-1, 1) == 0",
    )
    result = CodeAgent(smollm2_chat, docker_sandbox, max_attempts=3).invoke(task)
    assert result.passed, json.dumps(result.to_dict(), indent=1)[:3000]
    assert "def add" in result.code
    assert result.output_tokens > 0
    assert [o.passed for o in result.attempts[-1].report.outcomes] == [True, True]


def test_cli_solve_runs_the_code_in_docker(smollm2_chat, docker_sandbox) -> None:
    """`ragcoder solve` as a user types it: prints code really run in the Docker sandbox, and its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "solve", "--json", "--model", "smollm2-135m-instruct",
         "--sandbox", "docker", "--no-retrieval", "--attempts", "2",
         "Write a Python program that prints the numbers 1 to 5, one per line."],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode in (0, 2), proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    final = result["attempts"][-1]["result"]
    assert result["attempts"], result
    assert final["duration_ms"] > 0
    if result["passed"]:
        assert result["output"].split() == ["1", "2", "3", "4", "5"] or result["output"].strip()
