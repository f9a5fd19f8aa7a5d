"""The whole path with real parts: the real default model writes code, real Docker runs it.

SmolLM2-135M (4% on HumanEval) cannot reliably write even `add(a, b)` with our prompt, so the
end-to-end tests use the default Qwen2.5-Coder-1.5B (int8), as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ragcoder.agent import CodeAgent, Task

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def test_default_model_solves_an_instruction_with_tests_in_docker(qwen_chat, docker_sandbox) -> None:
    task = Task(
        id="palindrome",
        instruction="Write a Python function is_palindrome(s) that returns True if s reads the same "
        "forwards and backwards, ignoring case, spaces and punctuation.",
        tests="assert is_palindrome('A man, a plan, a canal: Panama')\nassert not is_palindrome('hello')\n"
        "assert is_palindrome('')",
    )
    result = CodeAgent(qwen_chat, docker_sandbox, max_attempts=3).invoke(task)
    assert result.passed, json.dumps(result.to_dict(), indent=1)[:3000]
    assert "def is_palindrome" in result.code
    assert result.output_tokens > 0 and result.check == "tests"
    assert [o.passed for o in result.attempts[-1].report.outcomes] == [True, True, True]


def test_cli_solve_prints_code_that_ran_in_docker(qwen_chat, docker_sandbox) -> None:
    """`ragcoder solve` as a user types it: code really run in the Docker sandbox, with its output."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragcoder.cli.app",
            "solve",
            "--sandbox",
            "docker",
            "--no-retrieval",
            "Write a function fib(n) that returns the n-th Fibonacci number, with fib(0) == 0 and "
            "fib(1) == 1, and print fib(10).",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "100"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "def fib" in out
    assert "output (ran in the docker sandbox)" in out
    assert "55" in out.split("output (ran in the docker sandbox)")[1]
    assert "PASSED" in out
