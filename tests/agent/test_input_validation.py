"""Bad user input, through the real CLI: each case is one line naming the problem, exit 1, no
traceback, and nothing heavy loaded (``build_agent`` is replaced by a loader that fails if called)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ragcoder.agent.config import AgentConfig, build_agent, resolve_config
from ragcoder.agent.config_rules import MAX_TIMEOUT_S, RULES
from ragcoder.agent.tasks import MAX_INSTRUCTION_CHARS, Task, clean_text, read_tests

from ragcoder.cli.app import cli
from ragcoder.errors import ConfigError, TaskError

HEAVY = ("torch", "transformers", "chromadb", "docker", "langchain_core", "sentence_transformers")


class ModelLoaded(AssertionError):
    """Raised by the stand-in loader: the input should have been refused before it ran."""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or project config file, no RAGCODER_* settings, and a loader that must not run."""
    for name in list(os.environ):
        if name.startswith("RAGCODER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "no-user-config.toml"))
    monkeypatch.chdir(tmp_path)

    def must_not_load(*args: Any, **kwargs: Any) -> Any:
        raise ModelLoaded("the model was about to load")

    monkeypatch.setattr("ragcoder.agent.config.build_agent", must_not_load)


def one_line_error(args: list[str], env: dict[str, str] | None = None) -> str:
    """Run the CLI; assert it refused with exit 1 and a single `error:` line (plus its hint)."""
    result = CliRunner().invoke(cli, args, env=env)
    if isinstance(result.exception, ModelLoaded):
        pytest.fail(f"{args}: the model loaded instead of refusing the input")
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert set(result.stderr.splitlines()) <= {errors[0], *(f"hint: {h}" for h in _hints())}, result.stderr
    return errors[0]


def _hints() -> set[str]:
    from ragcoder.agent.config import _FILE_HINT

    return {ConfigError.hint, _FILE_HINT}


# -- solve: instruction and --tests ---------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    (folder / "a-folder").mkdir(parents=True)
    (folder / "binary.py").write_bytes(bytes(range(256)) * 64)
    (folder / "latin1.py").write_bytes("assert f() == 'caf\xe9'\n".encode("latin-1"))
    (folder / "empty.py").write_text("  \n")
    (folder / "huge.py").write_text("assert True\n" * 100_000)
    return folder


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("@binary.py", "binary.py is not UTF-8 text (binary?)"),
        ("@latin1.py", "latin1.py is not UTF-8 text"),
        ("@a-folder", "a-folder is a folder: give one file of Python asserts"),
        ("@missing.py", "tests file missing.py: no such file"),
        ("@", "@ names no tests file"),
        ("@empty.py", "empty.py is empty"),
        ("@huge.py", "huge.py is over 1 MiB"),
        ("@/dev/zero", "/dev/zero is not a regular file"),
        ("   ", "the tests are empty"),
    ],
)
def test_solve_refuses_bad_tests_before_loading(
    spec: str, expected: str, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(inputs)
    assert expected in one_line_error(["solve", "Write f()", "--tests", spec])


@pytest.mark.parametrize("instruction", ["", "   ", "\n\t \n"])
def test_solve_refuses_an_empty_instruction(instruction: str) -> None:
    line = one_line_error(["solve", instruction])
    assert line == "error: the instruction is empty: say what the code should do"


def test_solve_refuses_an_over_long_instruction_naming_the_limit() -> None:
    line = one_line_error(["solve", "x" * 120_000])
    assert line == (
        "error: the instruction is 120,000 characters; the limit is 16,000 (setting max_instruction_chars): "
        "shorten it or raise the limit"
    )
    assert MAX_INSTRUCTION_CHARS == 16_000


def test_the_instruction_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raised in the environment, a 20k instruction gets past the checks (to the loader)."""
    seen: list[AgentConfig] = []

    def record(config: AgentConfig, **kwargs: Any) -> Any:
        seen.append(config)
        raise ModelLoaded("reached the loader")

    monkeypatch.setattr("ragcoder.agent.config.build_agent", record)
    result = CliRunner().invoke(cli, ["solve", "y" * 20_000], env={"RAGCODER_MAX_INSTRUCTION_CHARS": "30000"})
    assert isinstance(result.exception, ModelLoaded)
    assert seen[0].max_instruction_chars == 30_000
    assert seen[0].sources["max_instruction_chars"] == "RAGCODER_MAX_INSTRUCTION_CHARS"
    line = one_line_error(["solve", "y"], env={"RAGCODER_MAX_INSTRUCTION_CHARS": "200000"})
    assert (
        "max_instruction_chars = 200000 from RAGCODER_MAX_INSTRUCTION_CHARS: use an integer from 1 to 100000"
        in line
    )


def test_batch_applies_the_configured_limit_to_each_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragcoder.agent.tasks import read_tasks

    prompts = tmp_path / "tasks.jsonl"
    prompts.write_text(json.dumps({"id": "long", "instruction": "z" * 500}) + "\n")
    assert isinstance(next(iter(read_tasks(prompts))), Task)
    refused = next(iter(read_tasks(prompts, max_chars=100)))
    assert isinstance(refused, TaskError) and "the limit is 100" in str(refused)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
@pytest.mark.parametrize("name", ["tasks.jsonl", "tasks.txt"])
def test_batch_refuses_a_file_with_no_tasks_before_loading(name: str, content: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text(content)
    line = one_line_error(["batch", name, "-o", "out.jsonl"])
    assert line == f"error: {name} holds no tasks: one JSON object per line, or one instruction per paragraph"
    assert not (tmp_path / "out.jsonl").exists()


def test_undecodable_bytes_in_an_instruction_are_replaced_not_passed_on() -> None:
    argv_like = b"Write caf\xe9 \xff".decode("utf-8", "surrogateescape")  # how Python decodes argv
    task = Task(id="t", instruction=argv_like, tests="assert f() == '\udcff'")
    assert task.instruction == "Write caf\ufffd \ufffd" and task.tests == "assert f() == '\ufffd'"
    task.instruction.encode("utf-8")  # what a tokenizer needs (a lone surrogate: TypeError there)
    assert clean_text("plain") == "plain"


def test_read_tests_passes_good_tests_through(inputs: Path) -> None:
    (inputs / "good.py").write_text("assert f() == 1\n")
    assert read_tests(f"@{inputs / 'good.py'}") == "assert f() == 1\n"
    assert read_tests("assert f() == 1") == "assert f() == 1"
    assert read_tests(None) is None


# -- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("ragcoder = 3", "ragcoder = 3 in {path}: [ragcoder] must be a table of settings"),
        ("max_attempts = inf", "max_attempts = inf from {path}: use an integer from 1 to 20"),
        ("max_attempts = nan", "max_attempts = nan from {path}: use an integer from 1 to 20"),
        ("max_attempts = true", "max_attempts = True from {path}: use an integer from 1 to 20"),
        ("max_attempts = 2.5", "max_attempts = 2.5 from {path}: use an integer from 1 to 20"),
        ("[ragcoder]\nk = -5", "k = -5 from {path}: use an integer from 1 to 20"),
        ("max_new_tokens = -1", "max_new_tokens = -1 from {path}: use an integer from 16 to 8192"),
        ("timeout = -5", "timeout = -5.0 from {path}: use a number above 0 and at most 600, or none"),
        ("timeout = inf", "timeout = inf from {path}: use a number above 0 and at most 600"),
        ("timeout = 1e308", "timeout = 1e+308 from {path}: use a number above 0 and at most 600"),
        ('retrieval_guess = "maybe"', "retrieval_guess = 'maybe' from {path}: use true or false"),
        ("retrieval = 7", "retrieval = 7 from {path}: choose one of auto, always, never"),
        ("model = 3", "model = 3 from {path}: use a non-empty string"),
        ('model = ""', "model = '' from {path}: use a non-empty string"),
        ("stuck_temperature = 3", "stuck_temperature = 3.0 from {path}: use a number above 0 and at most 2"),
        (
            "max_instruction_chars = 0",
            "max_instruction_chars = 0 from {path}: use an integer from 1 to 100000",
        ),
        ("colour = 'red'", "{path}: unknown setting(s) colour"),
        ("k = [", "{path} is not valid TOML"),
    ],
)
def test_bad_settings_in_a_project_file_are_one_line(toml: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "ragcoder.toml"
    path.write_text(toml + "\n")
    assert expected.format(path=path) in one_line_error(["solve", "Write f()"])


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e9", "soon"])
def test_bad_timeout_from_the_environment_is_one_line(value: str) -> None:
    line = one_line_error(["solve", "Write f()"], env={"RAGCODER_TIMEOUT": value})
    assert line.startswith("error: timeout = ") and "from RAGCODER_TIMEOUT" in line
    assert f"at most {MAX_TIMEOUT_S:g}" in line


def test_good_values_still_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ragcoder.toml").write_text("[ragcoder]\nk = 6\ntimeout = 30\nretrieval_guess = true\n")
    monkeypatch.setenv("RAGCODER_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("RAGCODER_ADAPTER", "none")
    config = resolve_config({"max_new_tokens": "512", "index_path": tmp_path})
    assert (config.k, config.timeout, config.retrieval_guess) == (6, 30.0, True)
    assert (config.max_attempts, config.adapter, config.max_new_tokens) == (3, None, 512)
    assert config.index_path == str(tmp_path) and config.sources["k"] == str(tmp_path / "ragcoder.toml")
    assert resolve_config({"timeout": "none"}).timeout is None


@pytest.mark.parametrize("kind", ["proc-mem", "folder", "device", "binary", "huge", "not-toml"])
def test_an_unusable_config_file_is_one_line(kind: str, tmp_path: Path) -> None:
    paths = {"proc-mem": Path("/proc/self/mem"), "folder": tmp_path, "device": Path("/dev/zero")}
    path = paths.get(kind, tmp_path / f"{kind}.toml")
    if kind == "binary":
        path.write_bytes(bytes(range(256)))
    elif kind == "huge":
        path.write_text("# padding\n" * 200_000)
    elif kind == "not-toml":
        path.write_text("<settings><k>4</k></settings>\n")
    expected = {
        "proc-mem": "cannot read RAGCODER_CONFIG /proc/self/mem",
        "folder": "is not a regular file",
        "device": "/dev/zero is not a regular file",
        "binary": "is not valid TOML",
        "huge": "is over 1 MiB: not a settings file",
        "not-toml": "is not valid TOML",
    }
    line = one_line_error(["solve", "Write f()"], env={"RAGCODER_CONFIG": str(path)})
    assert expected[kind] in line and "RAGCODER_CONFIG" in line


def test_config_show_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "ragcoder.toml").write_text("k = -5\n")
    assert "k = -5 from" in one_line_error(["config", "show"])


def test_every_setting_has_a_rule_and_every_number_an_explicit_range() -> None:
    from ragcoder.agent.scale_settings import SCALE_SETTINGS  # URLs and hosts: checked there

    names = {f.name for f in fields(AgentConfig)} - {"sources"}
    assert set(RULES) | set(SCALE_SETTINGS) == names and not set(RULES) & set(SCALE_SETTINGS)
    for name, rule in RULES.items():
        if rule.kind in (int, float):
            assert rule.low is not None and rule.high is not None, name
            assert rule.high < float("inf"), name
    assert RULES["timeout"].high == MAX_TIMEOUT_S


def test_build_agent_refuses_a_bad_config_built_in_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library caller who skips resolve_config gets the same check before the sandbox opens."""

    def no_sandbox(*args: Any, **kwargs: Any) -> Any:
        raise ModelLoaded("the sandbox was about to open")

    monkeypatch.setattr("ragcoder.sandbox.open_sandbox", no_sandbox)
    for bad, expected in [
        ({"k": -5}, "k = -5 from AgentConfig"),
        ({"timeout": float("nan")}, "timeout = nan"),
        ({"sandbox": "cloud"}, "sandbox = 'cloud'"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            build_agent(AgentConfig(**bad))


# -- the same, in a real process: no traceback and no heavy import --------------------------------


def test_bad_inputs_in_a_real_process_load_nothing_heavy(tmp_path: Path) -> None:
    (tmp_path / "bin.txt").write_bytes(bytes(range(1, 256)) * 8)
    (tmp_path / "ragcoder.toml").write_text("max_attempts = inf\n")
    script = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from ragcoder.cli.app import cli\n"
        "cases = [['solve', 'f', '--tests', '@bin.txt'], ['solve', 'f', '--tests', '@.'], ['solve', '   '],\n"
        "         ['solve', 'x' * 120000], ['search', '  ']]\n"
        "out = [CliRunner().invoke(cli, c).output for c in cases]\n"
        f"print(json.dumps([out, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    env = {**os.environ, "RAGCODER_CONFIG": str(tmp_path / "none.toml")}
    good = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    outputs, heavy = json.loads(good.stdout)
    assert heavy == []
    # the config file is refused first for solve (search has no agent settings)
    assert all(o.startswith("error: max_attempts = inf") for o in outputs[:4]), outputs
    assert outputs[4].startswith("Error: the query is empty")
    (tmp_path / "ragcoder.toml").unlink()
    good = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    outputs, heavy = json.loads(good.stdout)
    assert heavy == [] and all("Traceback" not in o and o.count("\n") <= 2 for o in outputs), outputs
    assert [o.splitlines()[0].split(":")[0] for o in outputs] == ["error"] * 4 + ["Error"]
    assert "not UTF-8 text" in outputs[0] and "is a folder" in outputs[1]
    assert "instruction is empty" in outputs[2] and "the limit is 16,000" in outputs[3]


# -- chat: stdin that is not UTF-8 ----------------------------------------------------------------

CHAT_SCRIPT = """
import json, sys
from tests.fakes import fenced, scripted
from ragcoder.agent import CodeAgent
from ragcoder.sandbox import open_sandbox
import ragcoder.agent.config as config

model = scripted([("", fenced("print('ok')"))])
config.build_agent = lambda cfg, **kw: CodeAgent(model, open_sandbox("unsafe-local"), samples=1)  # one prompt a turn
from ragcoder.cli.app import cli
try:
    cli(["chat", "--no-retrieval"], prog_name="ragcoder", standalone_mode=False)
finally:
    for prompt in model.prompts:
        prompt.encode("utf-8")  # strict, as the tokenizer needs it
    print("PROMPTS", json.dumps(model.prompts), file=sys.stderr)
"""


@pytest.mark.parametrize("encoding", ["", "utf-8:strict"])
def test_chat_replaces_bytes_that_are_not_utf8_and_goes_on(encoding: str, tmp_path: Path) -> None:
    """Locale decoding gives lone surrogates (which made the tokenizer raise TypeError); a strict
    stdin would raise UnicodeDecodeError. Either way the bytes become U+FFFD and the chat goes on."""
    stdin = b"Write caf\xe9 \xff\xfe printer\n" + b"x" * 20_000 + b"\nWrite a second one\n/exit\n"
    env = {**os.environ, "RAGCODER_CONFIG": str(tmp_path / "none.toml"), "PYTHONIOENCODING": encoding}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", CHAT_SCRIPT], input=stdin, cwd=root, env=env, capture_output=True, timeout=120
    )
    out, err = proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "TypeError" not in err
    prompts = json.loads(err.split("PROMPTS ", 1)[1])
    assert len(prompts) == 2  # the over-long message was refused; the next one ran
    assert "Write caf\ufffd \ufffd\ufffd printer" in prompts[0]
    # a follow-up carries the code it changes: a little over the 20,000 characters typed
    assert re.search(
        r"error: the instruction is 20,\d{3} characters; the limit is 16,000", " ".join(out.split())
    )
    assert out.count("PASSED") == 2 and out.rstrip().endswith("bye")
