"""The same behaviour tests against every real backend (Docker and the bubblewrap local one)."""

from __future__ import annotations

import pytest
from ragcoder.sandbox import Sandbox
from ragcoder.sandbox.base import TRUNCATION_MARKER


def test_stdout_stdin_and_exit_code(backend: Sandbox) -> None:
    result = backend.run("import sys\nprint('hello', sys.stdin.read().upper())\nsys.exit(3)", stdin="abc")
    assert result.stdout == "hello ABC\n"
    assert result.exit_code == 3
    assert result.error is None
    assert not result.ok


def test_runs_as_non_root_in_work(backend: Sandbox) -> None:
    result = backend.run("import os\nprint(os.getuid(), os.getcwd())")
    assert result.ok, result
    assert result.stdout.split() == ["10001", "/work"]


def test_user_error_is_data_with_user_line(backend: Sandbox) -> None:
    result = backend.run("x = 1\n\ndef f():\n    return {}['missing']\n\nf()\n")
    assert result.error is not None
    assert result.error.name == "KeyError"
    assert result.error.value == "'missing'"
    assert 'File "main.py", line 4, in f' in result.error.traceback
    assert "server" not in result.error.traceback  # our frames are trimmed
    assert result.failure_summary() == "KeyError: 'missing'"


def test_syntax_error(backend: Sandbox) -> None:
    result = backend.run("def broken(:\n    pass\n")
    assert result.error is not None and result.error.name == "SyntaxError"
    assert "main.py" in result.error.traceback


def test_timeout_always_returns(backend: Sandbox) -> None:
    result = backend.run("while True:\n    pass\n", timeout=1.0)
    assert result.timed_out
    assert 900 <= result.duration_ms < 5000
    assert backend.run("print('after')").stdout == "after\n"


def test_memory_bomb_is_oom_killed(backend: Sandbox) -> None:
    result = backend.run(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))\n", timeout=20
    )
    assert result.oom_killed or (result.error is not None and result.error.name == "MemoryError"), result
    assert not result.ok
    assert backend.run("print(2 + 2)").stdout == "4\n"


def test_files_in_and_out(backend: Sandbox) -> None:
    code = "data = open('in/data.txt').read()\nopen('out.txt', 'w').write(data * 2)\nprint(len(data))"
    result = backend.run(code, files={"in/data.txt": "abc", "raw.bin": b"\x00\x01"})
    assert result.ok, result
    assert result.stdout == "3\n"
    assert result.files == {"out.txt": b"abcabc"}  # unchanged inputs are not sent back


def test_state_is_clean_between_runs(backend: Sandbox) -> None:
    first = backend.run("open('left.txt', 'w').write('x')\nimport builtins\nbuiltins.LEAK = 1")
    assert first.ok
    second = backend.run("import os, builtins\nprint(os.listdir('.'), hasattr(builtins, 'LEAK'))")
    assert second.stdout == "[] False\n"


def test_output_is_capped_with_marker(backend: Sandbox) -> None:
    result = backend.run("print('x' * 200_000)")
    assert len(result.stdout.encode()) < 70_000
    assert "output truncated" in result.stdout
    assert TRUNCATION_MARKER.format(dropped=200_001 - 64 * 1024) in result.stdout


def test_run_tests_reports_each_case(backend: Sandbox) -> None:
    code = "def add(a, b):\n    return a + b\n"
    tests = "assert add(1, 2) == 3\nassert add(2, 2) == 5\ndef test_zero():\n    assert add(0, 0) == 0\n"
    report = backend.run_tests(code, tests)
    assert not report.passed
    assert [(o.name, o.passed) for o in report.outcomes] == [
        ("assert add(1, 2) == 3", True),
        ("assert add(2, 2) == 5", False),
        ("test_zero", True),
    ]
    assert report.failed[0].message == "got 4, expected 5"
    assert report.summary() == "2/3 tests passed"


def test_run_tests_passes_and_entry_point(backend: Sandbox) -> None:
    code = "def double(x):\n    return 2 * x\n"
    report = backend.run_tests(
        code, "def check(candidate):\n    assert candidate(4) == 8\n", entry_point="double"
    )
    assert report.passed, report
    assert report.outcomes[-1].name == "check(double)"


def test_run_tests_load_error(backend: Sandbox) -> None:
    report = backend.run_tests("import no_such_module_here\n", "assert True")
    assert not report.passed
    assert report.error is not None and report.error.name == "ModuleNotFoundError"


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.txt", ""])
def test_file_names_outside_work_are_refused(backend: Sandbox, name: str) -> None:
    with pytest.raises(ValueError, match="relative paths inside /work"):
        backend.run("pass", files={name: "x"})


def test_self_sigkill_is_not_reported_as_oom(backend: Sandbox) -> None:
    result = backend.run("import os, signal\nprint('bye', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.stdout == "bye\n"
    assert result.exit_code == -9
    assert not result.oom_killed
    assert not result.timed_out


def test_session_keeps_state_until_a_timeout_resets_it(backend: Sandbox) -> None:
    with backend.session() as session:  # type: ignore[attr-defined]
        assert session.run("x = 41").ok
        assert session.run("x += 1\nprint(x)").stdout == "42\n"
        failed = session.run("print(undefined_name)")
        assert failed.error is not None and failed.error.name == "NameError"
        assert session.run("import sys\nprint(sys.stdin.read(), x)", stdin="hi").stdout == "hi 42\n"
        assert session.run("open('kept.txt', 'w').write('k')").files == {"kept.txt": b"k"}
        assert session.run("print(open('kept.txt').read())").stdout == "k\n"
        assert not session.last_reset
        assert session.run("while True:\n    pass", timeout=1).timed_out
        assert session.last_reset
        assert session.run("print('x' in globals())").stdout == "False\n"
    # the session's worker is gone; plain runs still start clean
    assert backend.run("import os\nprint(os.listdir('.'))").stdout == "[]\n"
