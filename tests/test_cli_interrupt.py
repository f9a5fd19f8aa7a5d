"""Ctrl-C during batch or eval: the records are written, and the command exits at once even while
worker threads are still inside a generation (a normal exit would wait for them)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ragcoder.cli.options import exit_interrupted

BUSY_WORKER = """
import threading, time
from ragcoder.cli.options import exit_interrupted
threading.Thread(target=time.sleep, args=(120,)).start()  # a generation that cannot be stopped
exit_interrupted("out.jsonl")
"""


def test_an_interrupted_run_exits_without_waiting_for_busy_workers() -> None:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", BUSY_WORKER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and time.perf_counter() - started < 30
    assert done.stderr.strip() == (
        "interrupted: finished tasks are in out.jsonl; rerun the same command to resume."
    )


def test_without_busy_workers_it_is_a_normal_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        exit_interrupted("r.jsonl")
    assert exited.value.code == 130 and "finished tasks are in r.jsonl" in capsys.readouterr().err
