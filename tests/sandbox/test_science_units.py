"""Fast tests of the pieces behind package images, files and sessions (no Docker, fakes allowed).

The same behaviour against real containers is in test_science.py and test_files_sessions.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from ragcoder.agent import CodeAgent, Task
from ragcoder.agent.config import resolve_config
from ragcoder.sandbox import ErrorInfo, ExecResult, Sandbox
from ragcoder.sandbox.files import (
    MAX_INPUT_BYTES,
    file_kind,
    inputs_note,
    read_input_files,
    save_outputs,
)
from ragcoder.sandbox.images import top_level_modules
from ragcoder.sandbox.profiles import (
    SCIENTIFIC,
    SCIENTIFIC_MODULES,
    imported_modules,
    missing_message,
    missing_module,
    normalise_requirements,
    packages_tag,
)
from ragcoder.sandbox.session import Session, Sessions
from ragcoder.sandbox.tool import RunPythonTool

from ragcoder.errors import SandboxClosed, TaskError
from tests.fakes import fenced, scripted

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20


def _not_found(module: str) -> ErrorInfo:
    return ErrorInfo("ModuleNotFoundError", f"No module named '{module}'", "Traceback ...")


def test_imported_modules_are_third_party_top_levels() -> None:
    code = "import os, numpy as np\nfrom pandas.api import types\nfrom . import x\nimport matplotlib.pyplot\n"
    assert imported_modules(code) == {"numpy", "pandas", "matplotlib"}
    assert imported_modules("def f(:\nimport sklearn.linear_model\n") == {"sklearn"}  # unparsable
    assert imported_modules("from __future__ import annotations\nimport json") == set()


def test_missing_module_only_for_known_packages() -> None:
    assert missing_module(_not_found("numpy")) == "numpy"
    assert missing_module(_not_found("torch")) == "torch"
    assert missing_module(_not_found("solution")) is None  # the code's own module: repair can fix it
    assert missing_module(ErrorInfo("ValueError", "No module named 'numpy'", "")) is None
    assert missing_module(None) is None


def test_missing_message_says_what_to_do() -> None:
    assert missing_message("numpy") == (
        "needs numpy; build the scientific image with `ragcoder sandbox build-image --profile scientific`"
    )
    assert 'set sandbox_image = "scientific"' in missing_message("pandas", built=frozenset({SCIENTIFIC.tag}))
    assert "start Docker" in missing_message("numpy", backend="local")
    assert 'add "scikit-learn"' not in missing_message("numpy")
    assert missing_message("cv2").startswith('needs cv2; add "opencv-python-headless" to sandbox_packages')


def test_package_tag_is_a_stable_hash_of_the_list() -> None:
    assert normalise_requirements(["Requests ", "numpy==2.4.6", "requests"]) == ("numpy==2.4.6", "requests")
    assert packages_tag(["requests", "numpy==2.4.6"]) == packages_tag(["numpy==2.4.6", "Requests"])
    assert packages_tag(["requests"]) != packages_tag(["requests==2.0"])
    assert packages_tag(["requests"]).startswith("ragcoder-sandbox:pkgs-")
    with pytest.raises(ValueError, match="not a package spec"):
        normalise_requirements(["==1.0"])


def test_top_level_modules_of_a_target_folder(tmp_path: Path) -> None:
    for folder in ("numpy", "numpy.libs", "numpy-2.4.6.dist-info", "bin", "mpl_toolkits"):
        (tmp_path / folder).mkdir()
    (tmp_path / "six.py").write_text("")
    (tmp_path / "_cffi_backend.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert top_level_modules(tmp_path) == {"numpy", "mpl_toolkits", "six", "_cffi_backend"}
    assert {"numpy", "pandas", "matplotlib", "scipy", "sklearn"} <= SCIENTIFIC_MODULES


def test_file_kinds_by_content_not_name() -> None:
    assert file_kind(PNG) == "png"
    assert file_kind(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert file_kind(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg">') == "svg"
    assert file_kind(b"GIF89a...") == "gif"
    assert file_kind(b"a,b\n1,2\n") == ""


def test_inputs_read_checked_and_named(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    files = read_input_files([data])
    assert files == {"data.csv": b"a,b\n1,2\n"}
    assert inputs_note(files) == "Input files in the current working folder: data.csv (8 B)."
    with pytest.raises(TaskError, match="no such file"):
        read_input_files([tmp_path / "nope.csv"])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.csv").write_text("x")
    with pytest.raises(TaskError, match=r"also named data\.csv"):
        read_input_files([data, tmp_path / "sub" / "data.csv"])
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)
    with pytest.raises(TaskError, match="over the"):
        read_input_files([big])


def test_save_outputs_describes_and_stays_inside(tmp_path: Path) -> None:
    saved = save_outputs({"plots/hist.png": PNG + b"\0" * 23_000}, tmp_path)
    assert saved[0].path == tmp_path / "plots" / "hist.png" and saved[0].is_image
    assert saved[0].describe() == f"wrote plots/hist.png (23 KB), saved to {tmp_path / 'plots' / 'hist.png'}"
    with pytest.raises(ValueError):
        save_outputs({"../escape.txt": b"x"}, tmp_path)


class _MissingSandbox(Sandbox):
    """Scripted: code that imports numpy fails as a standard-library image would, with the note."""

    name = "fake"

    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        if "numpy" in code:
            note = missing_message("numpy")
            return ExecResult(exit_code=1, error=_not_found("numpy"), missing=note)
        return ExecResult(stdout="ok\n")


def test_the_loop_stops_on_a_missing_package_instead_of_repairing() -> None:
    model = scripted([("", fenced("import numpy as np\nprint(np.arange(3))"))])
    result = CodeAgent(model, _MissingSandbox(), max_attempts=4, samples=1).invoke(
        Task(id="n", instruction="Use numpy.")
    )
    assert result.stop_reason == "missing-package" and len(result.attempts) == 1
    assert result.attempts[0].feedback.splitlines()[0] == missing_message("numpy")
    assert len(model.prompts) == 1  # no repair was asked for


class _Inner:
    """A backend session that keeps a dict as its namespace (scripted, no process)."""

    def __init__(self, log: list[str]) -> None:
        self.namespace: dict[str, object] = {}
        self.last_reset = False
        self.log = log
        log.append("open")

    def run(self, code: str, *, stdin=None, files=None, timeout=None) -> ExecResult:
        self.log.append(f"files={sorted(files or {})}")
        try:
            exec(code, self.namespace)
        except Exception as exc:  # user-code errors are data, as in a real sandbox
            return ExecResult(exit_code=1, error=ErrorInfo(type(exc).__name__, str(exc), ""))
        return ExecResult(stdout=str(self.namespace.get("out", "")))

    def close(self) -> None:
        self.log.append("close")


def test_session_keeps_state_writes_inputs_once_and_resets() -> None:
    log: list[str] = []
    closed: list[bool] = []
    session = Session(lambda: _Inner(log), on_close=lambda: closed.append(True), inputs={"d.csv": b"1"})
    session.run("x = 41")
    assert session.run("out = x + 1").stdout == "42"
    session.reset()
    assert session.run("out = x").error.name == "NameError"
    session.close()
    assert log == ["open", "files=['d.csv']", "files=[]", "close", "open", "files=['d.csv']", "close"]
    assert closed == [True] and session.resets == 1
    with pytest.raises(SandboxClosed):
        session.run("1")


class _SessionSandbox(_MissingSandbox):
    def __init__(self) -> None:
        self.log: list[str] = []

    def session(self) -> _Inner:
        return _Inner(self.log)


def test_named_sessions_are_separate_bounded_and_closed() -> None:
    sessions = Sessions(_SessionSandbox(), max_sessions=2)
    a, b = sessions.get("a"), sessions.get("b")
    a.run("v = 'a'")
    b.run("v = 'b'")
    assert a.run("out = v").stdout == "a" and b.run("out = v").stdout == "b"
    assert sessions.get("a") is a
    sessions.get("c")  # room for c: b is the least recently used
    assert "b" not in sessions and "a" in sessions
    sessions.close()
    with pytest.raises(SandboxClosed):
        a.run("1")


def test_tool_returns_files_as_artifacts_and_keeps_sessions() -> None:
    class Writer(_SessionSandbox):
        def run(self, code, *, stdin=None, files=None, timeout=None) -> ExecResult:
            return ExecResult(files={"hist.png": PNG})

    tool = RunPythonTool(sandbox=Writer())
    message = tool.invoke({"type": "tool_call", "id": "1", "name": "run_python", "args": {"code": "plot()"}})
    assert "files written: hist.png (28 B, png image)" in message.content
    assert [(f.name, f.kind, f.data) for f in message.artifact] == [("hist.png", "png", PNG)]
    tool.invoke({"code": "x = 5", "session_id": "s1"})
    assert tool.invoke({"code": "out = x * 2", "session_id": "s1"}).startswith("exit code: 0\nstdout:\n10")
    assert "NameError" in tool.invoke({"code": "out = x", "session_id": "s1", "reset_session": True})
    tool.close()


def test_sandbox_settings_resolve_from_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "user.toml"))
    (tmp_path / "ragcoder.toml").write_text('sandbox_image = "scientific"\nsandbox_packages = ["requests"]\n')
    config = resolve_config()
    assert config.sandbox_image == "scientific" and config.sandbox_packages == ["requests"]
    monkeypatch.setenv("RAGCODER_SANDBOX_PACKAGES", "requests, pyyaml")
    assert resolve_config().sandbox_packages == ["requests", "pyyaml"]


def test_an_image_with_an_older_warm_up_module_is_rebuilt() -> None:
    from ragcoder.sandbox.images import WARMUP_MODULE, ImageInfo, is_stale, warmup_hash

    current = ImageInfo("t", frozenset({"pandas"}), preload=("pandas", WARMUP_MODULE), warmup=warmup_hash())
    assert not is_stale(current)
    assert is_stale(ImageInfo("t", frozenset({"pandas"}), preload=("pandas", WARMUP_MODULE), warmup=""))
    assert not is_stale(ImageInfo("t", frozenset({"requests"}), preload=()))  # no warm-up: nothing to redo
