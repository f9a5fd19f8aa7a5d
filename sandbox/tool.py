"""``run_python``: a LangChain tool around any :class:`~ragcoder.sandbox.base.Sandbox`.

    from ragcoder.sandbox import open_sandbox
    from ragcoder.sandbox.tool import RunPythonTool

    tool = RunPythonTool(sandbox=open_sandbox())
    tool.invoke({"code": "print(2 + 2)"})   # -> "exit code: 0\\nstdout:\\n4\\n"

Any LangChain agent (``create_agent``, a langgraph ToolNode, ...) can call it. The answer is one
text block a model can read: exit status, stdout, stderr, and the error with its traceback.
"""

from __future__ import annotations

import math
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field
from ragcoder.sandbox.base import DEFAULT_TIMEOUT_S, ExecResult, Sandbox

from ragcoder.errors import ConfigError


class RunPythonInput(BaseModel):
    """Arguments of run_python."""

    code: str = Field(description="A complete Python 3 program. Print what you want to see.")
    stdin: str | None = Field(default=None, description="Text given to the program on standard input.")
    # float | str: a model may send "inf" or "soon"; the tool answers those with an error line.
    timeout: float | str | None = Field(
        default=None, description="Seconds before the run is stopped (at most the tool's maximum)."
    )


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
        parts.append("files written: " + ", ".join(sorted(result.files)))
    return "\n".join(parts) + "\n"


class RunPythonTool(BaseTool):
    """Runs Python code in an isolated sandbox and returns what it printed (or how it failed)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "run_python"
    description: str = (
        "Run a Python 3 program in an isolated sandbox (no network, only the standard library, "
        "a fresh process each time) and get back its exit code, stdout, stderr and any error with "
        "its traceback. Use print() to see values."
    )
    args_schema: type[BaseModel] = RunPythonInput
    sandbox: Sandbox = Field(description="The sandbox every call runs in (not closed by the tool).")
    max_timeout_s: float | None = Field(
        default=None,
        description="The longest run the model may ask for (None: the sandbox's default timeout).",
    )

    def limit_s(self) -> float:
        """The largest timeout a call may ask for."""
        if self.max_timeout_s is not None:
            return self.max_timeout_s
        settings = getattr(self.sandbox, "settings", None)
        return float(getattr(settings, "timeout_s", DEFAULT_TIMEOUT_S))

    def _run(self, code: str, stdin: str | None = None, timeout: float | str | None = None, **_: Any) -> str:
        limit = self.limit_s()
        seconds = None if timeout is None else _seconds(timeout)
        if timeout is not None and (seconds is None or not 0 < seconds <= limit):
            return f"error: timeout must be a number of seconds above 0 and at most {limit:g}, got {timeout!r}; the program did not run\n"
        try:
            result = self.sandbox.run(code, stdin=stdin, timeout=seconds)
        except ConfigError as exc:
            return f"error: {exc}; the program did not run\n"
        return format_result(result)


def _seconds(value: float | str) -> float | None:
    """``value`` as a finite number of seconds, or None."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None
