"""Named chat sessions (--session NAME), /open FILE and /write, driven through stdin."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ragcoder.agent import CodeAgent
from rich.console import Console

from ragcoder.cli.chat import run_chat
from ragcoder.cli.chat_sessions import ChatSessionStore
from ragcoder.errors import ConfigError
from tests.agent.test_chat import feed
from tests.fakes import fenced, scripted

V1 = "def absval(x):\n    return x\n"
V2 = "def absval(x):\n    return -x if x < 0 else x\n"
ROOT = Path(__file__).resolve().parents[2]


def chat(agent: CodeAgent, lines: list[str], store: ChatSessionStore | None) -> str:
    out = io.StringIO()
    run_chat(agent, feed(lines), Console(file=out, width=400, color_system=None), session=store)
    return out.getvalue()


def test_a_named_session_resumes_its_code_tests_and_messages(tmp_path: Path, trusted_sandbox) -> None:
    store = ChatSessionStore.named("absval", tmp_path)
    model = scripted([("negative numbers", fenced(V2)), ("", fenced(V1))])
    agent = CodeAgent(model, trusted_sandbox)
    chat(agent, ["Write absval(x) for non-negative x.", "/tests assert absval(3) == 3", "/exit"], store)
    assert json.loads(store.path.read_text())["code"] == V1

    text = chat(agent, ["now make it handle negative numbers", "/exit"], store)
    assert "resumed session absval: 1 message(s)" in text
    assert "> Write absval(x) for non-negative x." in text and "return x" in text
    # the follow-up went to the model with the resumed code and instruction, under the resumed tests
    assert V1.strip() in model.prompts[-1] and "non-negative x" in model.prompts[-1]
    saved = json.loads(store.path.read_text())
    assert saved["code"] == V2 and saved["tests"] == "assert absval(3) == 3"
    assert saved["messages"] == ["Write absval(x) for non-negative x.", "now make it handle negative numbers"]


def test_open_a_file_change_it_and_write_it_back(tmp_path: Path, trusted_sandbox) -> None:
    source = tmp_path / "absval.py"
    source.write_text(V1)
    model = scripted([("negative numbers", fenced(V2))])
    agent = CodeAgent(model, trusted_sandbox)
    text = chat(agent, [f"/open {source}", "make it handle negative numbers", "/write", "/exit"], None)
    assert f"opened {source} (2 lines)" in text and f"wrote 2 lines to {source}" in text
    assert V1.strip() in model.prompts[0]  # the opened code is what the follow-up changed
    assert source.read_text() == V2


def test_open_and_write_refuse_with_one_line(tmp_path: Path, trusted_sandbox) -> None:
    agent = CodeAgent(scripted([]), trusted_sandbox)
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"\xff\xfe\x00")
    text = chat(
        agent, [f"/open {tmp_path / 'missing.py'}", f"/open {binary}", "/write", "/open", "/exit"], None
    )
    assert f"error: cannot open {tmp_path / 'missing.py'}: [Errno 2]" in text
    assert f"error: cannot open {binary}: 'utf-8' codec can't decode" in text
    assert "usage: /write FILE (or /open a file first)" in text and "usage: /open FILE" in text


def test_bad_session_names_and_files_are_refused(tmp_path: Path) -> None:
    for name in ["../escape", "", "a b", ".hidden"]:
        with pytest.raises(ConfigError, match="not usable as a file name"):
            ChatSessionStore.named(name, tmp_path)
    store = ChatSessionStore.named("broken", tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        store.load()
    store.path.write_text('{"format": 99}')
    with pytest.raises(ConfigError, match="not a ragcoder session"):
        store.load()


CHAT_SCRIPT = """
import sys
from tests.fakes import fenced, scripted
from ragcoder.agent import CodeAgent
from ragcoder.sandbox import open_sandbox
import ragcoder.agent.config as config

model = scripted([("negative numbers", fenced("def absval(x):\\n    return abs(x)\\n")),
                  ("", fenced("def absval(x):\\n    return x\\n"))])
config.build_agent = lambda cfg, **kw: CodeAgent(model, open_sandbox("unsafe-local"))
from ragcoder.cli.app import cli
try:
    cli(["chat", "--no-retrieval", *sys.argv[1:]], prog_name="ragcoder")
finally:
    print("PROMPT", repr(model.prompts[-1:]), file=sys.stderr)
"""


def test_the_cli_keeps_a_session_between_runs(tmp_path: Path) -> None:
    env = {**os.environ, "RAGCODER_CONFIG": str(tmp_path / "none.toml"), "RAGCODER_DATA_DIR": str(tmp_path)}

    def run(stdin: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", CHAT_SCRIPT, *args],
            input=stdin,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = run("Write absval(x).\n/exit\n", "--session", "demo")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run("now handle negative numbers\n/exit\n", "--session", "demo")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed session demo: 1 message(s)" in second.stdout
    assert "return x" in second.stderr.split("PROMPT", 1)[1]  # the follow-up saw the first run's code
    saved = json.loads((tmp_path / "chat_sessions" / "demo.json").read_text())
    assert saved["messages"] == ["Write absval(x).", "now handle negative numbers"]
    bad = run("", "--session", "../x")
    assert (
        bad.returncode != 0 and "session name '../x' is not usable as a file name" in bad.stdout + bad.stderr
    )
