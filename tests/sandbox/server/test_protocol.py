"""The server's protocol: hello, runs, how a run's end is known, exit codes, refused requests."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ragcoder.sandbox.answers import exec_result

from .conftest import ServerProcess


def test_hello_ping_and_unknown_ops(shared_server: ServerProcess) -> None:
    assert shared_server.hello["hello"] == "ragcoder-server"
    assert isinstance(shared_server.hello["seccomp_filters"], int)
    assert shared_server.request({"op": "ping"}) == {"ok": True, "pong": True}
    answer = shared_server.request({"op": "launch"})
    assert not answer["ok"] and "unknown op" in answer["problem"]


def test_every_run_is_followed_by_ready(shared_server: ServerProcess) -> None:
    answer = shared_server.run("print(input()[::-1])", stdin="abc")
    assert answer["stdout"] == "cba\n" and answer["exit_code"] == 0
    assert shared_server.after == {"ok": True, "ready": True}


EXIT_CODES = [
    "None",
    "0",
    "1",
    "3",
    "255",
    "256",
    "-1",
    "2**31",
    "2**32 + 3",
    "2**63 - 1",
    "2**63",
    "2**64",
    "-(2**63)",
    "-(2**63) - 1",
    "10**100",
    "True",
    "False",
    "'text'",
    "1.5",
    "[1]",
    "b'x'",
]


@pytest.mark.parametrize("code", EXIT_CODES)
def test_exit_codes_are_what_cpython_gives(shared_server: ServerProcess, code: str) -> None:
    program = f"import sys\nsys.exit({code})"
    expected = subprocess.run([sys.executable, "-c", program], capture_output=True, check=False).returncode
    answer = shared_server.run(program)
    assert answer["exit_code"] == expected, (code, answer)
    result = exec_result(answer, 65536)
    assert result.ok == (expected == 0)


def test_an_int_subclass_cannot_lie_about_its_exit_code(shared_server: ServerProcess) -> None:
    program = "import sys\nclass Zero(int):\n    def __and__(self, o): return 0\nsys.exit(Zero(7))"
    assert shared_server.run(program)["exit_code"] == 7


def test_a_run_ends_when_its_process_ends_not_when_it_says_so(shared_server: ServerProcess) -> None:
    """The child used to report its end on fd 3; a forged frame made a sleeping run ok=True."""
    forge = (
        "import json, os, time\n"
        "os.write(3, json.dumps({'kind': 'exit', 'status': 0}).encode() + b'\\n')\n"
        "for fd in (0, 1, 2, 3):\n    os.close(fd)\n"
        "time.sleep(30)\n"
    )
    answer = shared_server.run(forge, timeout=1)
    assert answer["timed_out"] and answer["duration_ms"] >= 1000
    assert not exec_result(answer, 65536).ok
    answer = shared_server.run(
        "import json, os\nos.write(3, json.dumps({'kind': 'exit', 'status': 0}).encode() + b'\\n')\nos._exit(3)"
    )
    assert answer["exit_code"] == 3


def test_a_forged_crash_is_the_codes_own_error(shared_server: ServerProcess) -> None:
    forge = (
        "import json, os\n"
        "os.write(3, json.dumps({'kind': 'error', 'name': 'SandboxCrashed', 'value': 'x', 'traceback': ''}).encode() + b'\\n')\n"
        "os._exit(1)\n"
    )
    result = exec_result(shared_server.run(forge), 65536)
    assert result.error is not None and result.error.name == "__main__.SandboxCrashed"
    raised = exec_result(
        shared_server.run("class SandboxCrashed(Exception):\n    pass\nraise SandboxCrashed('x')"), 65536
    )
    assert raised.error is not None and raised.error.name == "__main__.SandboxCrashed"


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), -1, 0, 1e308, "10", True, None])
def test_a_timeout_that_is_not_a_sane_number_is_refused(
    shared_server: ServerProcess, timeout: object
) -> None:
    answer = shared_server.request({"op": "run", "code": "print(1)", "timeout": timeout})
    assert not answer["ok"] and "timeout" in answer["problem"]
    assert shared_server.after == {"ok": True, "ready": True}
    assert shared_server.run("print(2)")["stdout"] == "2\n"


def test_text_that_is_not_utf8_clean_crosses_without_breaking_anything(shared_server: ServerProcess) -> None:
    answer = shared_server.run(
        "import sys\nprint('a')\nsys.stdout.flush()\nsys.stdout.buffer.write(b'\\xff\\xfe')"
    )
    assert answer["ok"] and answer["stdout"] == "a\n\ufffd\ufffd"
    answer = shared_server.run("raise ValueError('\\udcff')")
    result = exec_result(answer, 65536)
    assert result.error is not None and result.error.name == "ValueError"
    result.error.value.encode("utf-8")  # no lone surrogate reaches the host's results
