"""Files in and out, and stateful sessions, against every real backend (Docker and bubblewrap)."""

from __future__ import annotations

import pytest
from ragcoder.sandbox import Sandbox
from ragcoder.sandbox.session import Sessions, open_session
from ragcoder.sandbox.tool import RunPythonTool

from tests.sandbox.conftest import BACKENDS, open_backend

CSV = b"city,temp\nOslo,4\nRome,18\nLima,20\n"


def test_file_round_trip(backend: Sandbox) -> None:
    code = (
        "import csv\n"
        "rows = list(csv.DictReader(open('data.csv')))\n"
        "with open('out/summary.txt', 'w') as f:\n"
        "    f.write(str(sum(int(r['temp']) for r in rows)))\n"
        "open('image.svg', 'w').write('<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>')\n"
        "print(len(rows))"
    )
    result = backend.run(f"import os\nos.makedirs('out')\n{code}", files={"data.csv": CSV})
    assert result.ok, result.stderr
    assert result.stdout == "3\n"
    # new files come back; the unchanged input does not
    assert dict(result.files) == {
        "out/summary.txt": b"42",
        "image.svg": b'<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    }
    # the next run starts with an empty /work
    assert backend.run("import os; print(os.listdir('.'))").stdout == "[]\n"


@pytest.mark.parametrize("kind", BACKENDS)
def test_files_over_a_cap_are_named_not_returned(kind: str) -> None:
    with open_backend(kind, pool_size=1, max_one_file_bytes=1000, max_file_bytes=1500) as sandbox:
        code = "open('a.bin', 'wb').write(b'a' * 900)\nopen('b.bin', 'wb').write(b'b' * 900)\n"
        code += "open('big.bin', 'wb').write(b'c' * 5000)\n"
        result = sandbox.run(code)
    assert result.ok
    assert sorted(result.files) == ["a.bin"]  # b.bin would pass the total cap, big.bin the per-file one
    assert dict(result.files_skipped) == {"b.bin": 900, "big.bin": 5000}


def test_session_keeps_state_and_resets(backend: Sandbox) -> None:
    with open_session(backend, inputs={"data.csv": CSV}) as session:
        first = session.run("import csv\nrows = list(csv.DictReader(open('data.csv')))\nn = len(rows)")
        assert first.ok, first.stderr
        second = session.run("open('seen.txt', 'w').write(str(n))\nprint(n * 10)")
        assert second.stdout == "30\n" and dict(second.files) == {"seen.txt": b"3"}
        third = session.run("print(n + 1)")
        assert third.stdout == "4\n" and dict(third.files) == {}  # earlier files come back only when changed
        session.reset()
        after = session.run("print(n)")
        assert after.error is not None and after.error.name == "NameError"
        # the inputs are written again for the fresh session
        assert session.run("print(open('data.csv').read().count(chr(10)))").stdout == "4\n"


def test_sessions_are_isolated(backend: Sandbox) -> None:
    sessions = Sessions(backend, max_sessions=2)
    try:
        a, b = sessions.get("a"), sessions.get("b")
        a.run("secret = 'a'\nopen('mine.txt', 'w').write('a')")
        b.run("secret = 'b'")
        assert a.run("print(secret)").stdout == "a\n"
        assert b.run("print(secret)").stdout == "b\n"
        seen = b.run("import os; print(os.path.exists('mine.txt'))")
        assert seen.stdout == "False\n"
    finally:
        sessions.close()


def test_tool_session_through_a_real_backend(backend: Sandbox) -> None:
    tool = RunPythonTool(sandbox=backend)
    try:
        tool.invoke({"code": "total = sum(range(10))", "session_id": "work"})
        assert tool.invoke({"code": "print(total)", "session_id": "work"}) == "exit code: 0\nstdout:\n45\n"
        fresh = tool.invoke({"code": "print(total)"})  # no session: a fresh process
        assert "NameError" in fresh
    finally:
        tool.close()


def test_chat_names_the_files_it_saved_and_run_keeps_state(tmp_path, trusted_sandbox) -> None:
    import io

    from ragcoder.agent import CodeAgent
    from rich.console import Console

    from ragcoder.cli.chat import run_chat
    from tests.fakes import fenced, scripted

    code = "open('hist.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(23_000))\nx = 41\n"
    agent = CodeAgent(scripted([("", fenced(code))]), trusted_sandbox)
    lines = ["Plot it to hist.png.", "/run", "/run print(x + 1)", "/reset-run", "/run print(x)"]
    out = io.StringIO()
    run_chat(
        agent,
        lambda _: lines.pop(0) if lines else None,
        Console(file=out, width=300, color_system=None),
        outputs_dir=tmp_path,
        stream_tokens=False,
    )
    text = out.getvalue()
    saved = tmp_path / "hist.png"
    assert f"wrote hist.png (23 KB), saved to {saved}" in text
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert "\n42\n" in text  # /run ran the code in the session, the follow-up saw its x
    assert "NameError: name 'x' is not defined" in text  # after /reset-run it is gone


def test_a_missing_input_file_is_one_line_before_anything_loads(tmp_path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragcoder.cli.app",
            "solve",
            "Sum the column.",
            "--file",
            str(tmp_path / "no.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == f"error: --file {tmp_path / 'no.csv'}: no such file"


def test_batch_rows_record_the_files_saved(tmp_path, trusted_sandbox) -> None:
    import json

    from ragcoder.agent import CodeAgent, Task
    from ragcoder.agent.batch import run_batch

    from tests.fakes import fenced, scripted

    code = "with open('table.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')\nprint('done')\n"
    agent = CodeAgent(scripted([("", fenced(code))]), trusted_sandbox)
    out = tmp_path / "results.jsonl"
    run_batch(agent, [Task(id="HumanEval/7", instruction="Write table.csv.")], out)
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    saved = tmp_path / "results.files" / "HumanEval_7" / "table.csv"
    assert row["outputs"] == [str(saved)] and saved.read_text() == "a,b\n1,2\n"
