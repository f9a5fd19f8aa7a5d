"""The `ragcoder` command as a user runs it: instant help, one-line errors, non-zero exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "chromadb", "docker", "langchain_core", "sentence_transformers", "peft")


def ragcoder(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ragcoder.cli.app", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from click.testing import CliRunner; import ragcoder.cli.app as c;"
        "r = CliRunner().invoke(c.cli, ['--help']); assert r.exit_code == 0, r.output;"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_commands() -> None:
    proc = ragcoder("--help")
    assert proc.returncode == 0
    for command in ("solve", "batch", "models", "sandbox", "index"):
        assert command in proc.stdout


def test_unknown_model_is_one_clear_line(tmp_path: Path) -> None:
    proc = ragcoder(
        "solve",
        "Write f()",
        "--model",
        "no-such-model",
        "--sandbox",
        "unsafe-local",
        "--no-retrieval",
        env={"RAGCODER_CACHE_DIR": str(tmp_path)},
    )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert lines and lines[0].startswith("error:") and "no-such-model" in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_prompt_file_is_one_clear_line(tmp_path: Path) -> None:
    proc = ragcoder("batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot read prompt file")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("bad", ["--attempts=0", "--sandbox=nowhere"])
def test_bad_options_exit_non_zero(bad: str) -> None:
    proc = ragcoder("solve", "x", bad)
    assert proc.returncode == 2 and "Invalid value" in proc.stderr
