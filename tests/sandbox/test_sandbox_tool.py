"""The run_python LangChain tool: standard conformance suite, formatting, and a real run."""

from __future__ import annotations

from collections.abc import Mapping

from langchain_tests.unit_tests import ToolsUnitTests
from ragcoder.sandbox import ErrorInfo, ExecResult, Sandbox
from ragcoder.sandbox.tool import RunPythonTool, format_result


class EchoSandbox(Sandbox):
    """Scripted: 'fail' in the code gives an error result, anything else echoes the code."""

    name = "echo"

    def run(
        self,
        code: str,
        *,
        stdin: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        if "fail" in code:
            err = ErrorInfo(
                "ValueError",
                "bad",
                'Traceback (most recent call last):\n  File "main.py", line 1\nValueError: bad',
            )
            return ExecResult(stderr=err.traceback, exit_code=1, error=err)
        return ExecResult(stdout=f"ran {code} with {stdin}\n")


class TestRunPythonStandard(ToolsUnitTests):
    @property
    def tool_constructor(self) -> type[RunPythonTool]:
        return RunPythonTool

    @property
    def tool_constructor_params(self) -> dict:
        return {"sandbox": EchoSandbox()}

    @property
    def tool_invoke_params_example(self) -> dict:
        return {"code": "print(1)", "stdin": None, "timeout": 5.0}


def test_tool_formats_output_and_errors() -> None:
    tool = RunPythonTool(sandbox=EchoSandbox())
    assert tool.name == "run_python"
    assert tool.invoke({"code": "x = 1", "stdin": "in"}) == "exit code: 0\nstdout:\nran x = 1 with in\n"
    text = tool.invoke({"code": "fail"})
    assert text.startswith("exit code: 1\nerror: ValueError: bad\nTraceback")


def test_format_timeout_and_oom() -> None:
    assert format_result(ExecResult(timed_out=True, exit_code=None)).startswith("timed out")
    assert format_result(ExecResult(oom_killed=True, exit_code=137)).startswith("killed: out of memory")
    assert "files written: a.txt" in format_result(ExecResult(files={"a.txt": b"x"}))


def test_tool_runs_in_the_real_sandbox(backend: Sandbox) -> None:
    tool = RunPythonTool(sandbox=backend)
    out = tool.invoke({"code": "import math\nprint(math.factorial(5))"})
    assert out == "exit code: 0\nstdout:\n120\n"
    out = tool.invoke({"code": "1/0"})
    assert "error: ZeroDivisionError: division by zero" in out
    assert 'File "main.py", line 1' in out


BAD_TIMEOUTS = [float("inf"), "inf", 1e308, float("nan"), "nan", -1, 0, "-5", "soon", 40, 10.5]


def test_the_model_cannot_pick_an_unbounded_or_odd_timeout() -> None:
    """Issue 20: timeout=40 ran a 25 s sleep; "inf"/1e308 raised OverflowError, "nan" ValueError."""
    tool = RunPythonTool(sandbox=EchoSandbox())
    assert tool.limit_s() == 10.0  # the sandbox's default timeout, when the tool sets none
    for timeout in BAD_TIMEOUTS:
        text = tool.invoke({"code": "print(1)", "timeout": timeout})
        assert text.startswith("error: timeout must be a number of seconds above 0 and at most 10"), (
            timeout,
            text,
        )
        assert "the program did not run" in text
    assert tool.invoke({"code": "x = 1", "timeout": "2.5"}) == "exit code: 0\nstdout:\nran x = 1 with None\n"
    wide = RunPythonTool(sandbox=EchoSandbox(), max_timeout_s=60)
    assert wide.invoke({"code": "x", "timeout": 40}).startswith("exit code: 0")


def test_the_tool_bounds_timeouts_on_a_real_sandbox(backend: Sandbox) -> None:
    tool = RunPythonTool(sandbox=backend)
    assert tool.invoke({"code": "import time\ntime.sleep(25)", "timeout": 40}).startswith("error: timeout")
    assert tool.invoke({"code": "print(3)", "timeout": 5}) == "exit code: 0\nstdout:\n3\n"
    too_long = RunPythonTool(sandbox=backend, max_timeout_s=10_000)  # above the sandbox's own maximum
    assert too_long.invoke({"code": "print(1)", "timeout": 5000}).startswith("error: timeout 5000 s is over")


def test_a_program_runs_as_the_model_meant_it(backend: Sandbox) -> None:
    """What Qwen2.5 sends from examples/tool_agent.py: the code indented as a whole inside a
    triple-quoted argument ("unexpected indent" as sent), or ending in an expression, not a print
    (an empty answer as sent, which it then repeated)."""
    tool = RunPythonTool(sandbox=backend)
    indented = "\n    total = 0\n    for i in range(1, 4):\n        total += i\n    print(total)\n    "
    assert tool.invoke({"code": indented}) == "exit code: 0\nstdout:\n6\n"
    assert tool.invoke({"code": "sum([i**2 for i in range(1, 101)])"}) == "exit code: 0\nstdout:\n338350\n"
    assert tool.invoke({"code": "x = 'ok'\nx  # the answer"}) == "exit code: 0\nstdout:\n'ok'\n"
    assert tool.invoke({"code": "print('once')"}) == "exit code: 0\nstdout:\nonce\n"
    assert tool.invoke({"code": "def f():\n    pass\nf()"}) == "exit code: 0\n"  # None: nothing shown
    failed = tool.invoke({"code": "x = 1\n\nx / 0"})
    assert "line 3" in failed and "ZeroDivisionError" in failed  # line numbers as written
