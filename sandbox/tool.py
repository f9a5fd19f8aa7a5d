"""``run_python``: a LangChain tool around any :class:`~ragcoder.sandbox.base.Sandbox`.

    from ragcoder.sandbox import open_sandbox
    from ragcoder.sandbox.tool import RunPythonTool

    tool = RunPythonTool(sandbox=open_sandbox())
    tool.invoke({"code": "print(2 + 2)"})   # -> "exit code: 0\\nstdout:\\n4\\n"
    tool.invoke({"code": "x = 41", "session_id": "a"})            # state kept under "a"
    tool.invoke({"code": "print(x + 1)", "session_id": "a"})      # -> "...42..."

Any LangChain agent (``create_agent``, a langgraph ToolNode, ...) can call it. The answer is one
text block a model can read: exit status, stdout, stderr, and the error with its traceback.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Literal

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from ragcoder.sandbox.base import DEFAULT_TIMEOUT_S, ExecResult, Sandbox
from ragcoder.sandbox.files import OutputFile, human_size, outputs, skipped_lines
from ragcoder.sandbox.session import Sessions

from ragcoder.errors import ConfigError, SandboxError


class RunPythonInput(BaseModel):
    """Arguments of run_python."""

    code: str = Field(description="A complete Python 3 program. Print what you want to see.")
    stdin: str | None = Field(default=None, description="Text given to the program on standard input.")
    # float | str: a model may send "inf" or "soon"; the tool answers those with an error line.
    timeout: float | str | None = Field(
        default=None, description="Seconds before the run is stopped (at most the tool's maximum)."
    )
    session_id: str | None = Field(
        default=None,
        description="Name a session to keep variables and files between calls (reuse the same name); "
        "leave empty for a fresh process each time.",
    )
    reset_session: bool = Field(default=False, description="Start the named session over before this run.")


def format_result(result: ExecResult) -> str:
    """The run as plain text for a model: status line, stdout, stderr, error."""
    if result.timed_out:
        status = "timed out (the program was stopped)"
    elif result.oom_killed:
        status = "killed: out of memory"
    else:
        status = f"exit code: {result.exit_code}"
    parts = [status]
    if result.stdout:
        parts.append("stdout:\n" + result.stdout.rstrip("\n"))
    if result.error is not None:
        parts.append(f"error: {result.error.summary()}\n{result.error.traceback.rstrip()}")
    elif result.stderr:
        parts.append("stderr:\n" + result.stderr.rstrip("\n"))
    if result.files:
        parts.append("files written: " + ", ".join(_file_label(f) for f in outputs(result.files)))
    parts.extend(skipped_lines(result.files_skipped))
    if result.missing:
        parts.append(result.missing)
    return "\n".join(parts) + "\n"


def _file_label(f: OutputFile) -> str:
    return f"{f.name} ({human_size(f.size)}{', ' + f.kind + ' image' if f.is_image else ''})"


class RunPythonTool(BaseTool):
    """Runs Python code in an isolated sandbox and returns what it printed (or how it failed)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "run_python"
    description: str = (
        "Run a Python 3 program in an isolated sandbox (no network; the standard library, plus "
        "numpy, pandas, matplotlib and scipy where the scientific image is built) and get back its "
        "exit code, stdout, stderr, any error with its traceback, and the files it wrote (save plots "
        "to files). A fresh process each time, unless you name a session_id to keep variables."
    )
    args_schema: type[BaseModel] = RunPythonInput
    # The text goes to the model; the artifact (the files the run wrote, as OutputFile with
    # their bytes: plots, tables) stays with the caller (ToolMessage.artifact).
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    sandbox: Sandbox = Field(description="The sandbox every call runs in (not closed by the tool).")
    max_timeout_s: float | None = Field(
        default=None,
        description="The longest run the model may ask for (None: the sandbox's default timeout).",
    )
    _sessions: Sessions | None = PrivateAttr(default=None)

    def limit_s(self) -> float:
        """The largest timeout a call may ask for."""
        if self.max_timeout_s is not None:
            return self.max_timeout_s
        settings = getattr(self.sandbox, "settings", None)
        return float(getattr(settings, "timeout_s", DEFAULT_TIMEOUT_S))

    def _run(
        self,
        code: str,
        stdin: str | None = None,
        timeout: float | str | None = None,
        session_id: str | None = None,
        reset_session: bool = False,
        **_: Any,
    ) -> tuple[str, list[OutputFile]]:
        code = as_meant(code)
        limit = self.limit_s()
        seconds = None if timeout is None else _seconds(timeout)
        if timeout is not None and (seconds is None or not 0 < seconds <= limit):
            return (
                f"error: timeout must be a number of seconds above 0 and at most {limit:g}, got {timeout!r}; "
                "the program did not run\n",
                [],
            )
        if not session_id:
            try:
                result = self.sandbox.run(code, stdin=stdin, timeout=seconds)
            except ConfigError as exc:
                return f"error: {exc}; the program did not run\n", []
            return format_result(result), outputs(result.files)
        try:
            sessions = self.sessions
            if reset_session:
                sessions.reset(session_id)
            session = sessions.get(session_id)
            result = session.run(code, stdin=stdin, timeout=seconds)
        except ConfigError as exc:
            return f"error: {exc}; the program did not run\n", []
        except SandboxError as exc:  # the model reads this; the sandbox's own trouble is no traceback
            return f"sandbox error: {exc}\n", []
        note = f"session {session_id} was reset: earlier variables are gone\n" if session.last_reset else ""
        return format_result(result) + note, outputs(result.files)

    @property
    def sessions(self) -> Sessions:
        """The named sessions this tool has opened (closed by :meth:`close`)."""
        if self._sessions is None:
            self._sessions = Sessions(self.sandbox)
        return self._sessions

    def close(self) -> None:
        """Close the tool's sessions (the sandbox itself stays open: it is the caller's)."""
        if self._sessions is not None:
            self._sessions.close()


def as_meant(code: str) -> str:
    """``code`` as a model means it. Indentation shared by every line goes: models indent a whole
    program inside a JSON or triple-quoted argument, and as sent it could only fail ("unexpected
    indent"). A last line that is an expression shows its value, as in a notebook or the REPL
    (``sys.displayhook``: the repr, nothing for None): models end with ``total`` instead of
    ``print(total)`` and would see no output. Line numbers stay as written."""
    import ast

    code = textwrap.dedent(code)
    try:
        last = ast.parse(code).body[-1]
    except (SyntaxError, ValueError, IndexError):  # the run reports a syntax error itself
        return code
    if not isinstance(last, ast.Expr) or last.end_lineno is None or last.end_col_offset is None:
        return code
    called = last.value.func if isinstance(last.value, ast.Call) else None
    if isinstance(called, ast.Name) and called.id == "print":  # shows its output already
        return code
    lines = code.splitlines(keepends=True)
    # offsets are in UTF-8 bytes; splice the closing part first so the opening offset stays valid
    end = lines[last.end_lineno - 1].encode()
    lines[last.end_lineno - 1] = (end[: last.end_col_offset] + b"))" + end[last.end_col_offset :]).decode()
    start = lines[last.lineno - 1].encode()
    opening = b"__import__('sys').displayhook(("
    lines[last.lineno - 1] = (start[: last.col_offset] + opening + start[last.col_offset :]).decode()
    return "".join(lines)


def _seconds(value: float | str) -> float | None:
    """``value`` as a finite number of seconds, or None."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None
