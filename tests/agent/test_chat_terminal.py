"""`ragcoder chat` in a real terminal (tmux): prompt_toolkit input, rich output, /help, /exit.

Uses a tiny random model (its code is gibberish and fails; the UI is what is under test) and the
real Docker sandbox, since even gibberish is generated code and never runs unsandboxed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import docker_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.docker]
ROOT = Path(__file__).resolve().parents[2]


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def wait_for(session: str, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session, "-S", "-200")
        if text in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} did not appear; screen was:\n{screen}")


def test_chat_in_a_real_terminal(model_tiny_dir: Path) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is needed for this test in CI: .ci/run installs it (apt-get install tmux)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    docker_or_skip()
    session = f"ragcoder-test-{uuid.uuid4().hex[:8]}"
    command = " ".join(
        shlex.quote(part)
        for part in [
            "env",
            "HF_HUB_OFFLINE=1",
            "TERM=xterm-256color",
            f"RAGCODER_DATA_DIR={model_tiny_dir.parent}",
            sys.executable,
            "-m",
            "ragcoder.cli.app",
            "chat",
            "--model",
            str(model_tiny_dir),
            "--sandbox",
            "docker",
            "--no-retrieval",
            "--attempts",
            "1",
        ]
    )
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "50", "-c", str(ROOT), command)
    try:
        wait_for(session, "ragcoder>")
        tmux("send-keys", "-t", session, "/help", "Enter")
        assert "/save FILE" in wait_for(session, "/save FILE")
        tmux("send-keys", "-t", session, "Write add(a, b) returning a + b.", "Enter")
        screen = wait_for(session, "repair(s)")
        assert "attempt 1 (generate)" in screen
        assert "PASSED" in screen or "FAILED" in screen
        tmux("send-keys", "-t", session, "/exit", "Enter")
        wait_for(session, "bye")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
