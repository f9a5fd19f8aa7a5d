"""The chat loop driven through stdin-like input, asserting what the user sees."""

from __future__ import annotations

import io
from pathlib import Path

from ragcoder.agent import CodeAgent
from rich.console import Console

from ragcoder.cli.chat import run_chat
from tests.fakes import fenced, scripted

V1 = "def absval(x):\n    return x\n"
V2 = "def absval(x):\n    return -x if x < 0 else x\n"


def feed(lines: list[str]):
    queue = list(lines)

    def read_line(prompt: str) -> str | None:
        return queue.pop(0) if queue else None

    return read_line


def transcript(agent: CodeAgent, lines: list[str]) -> tuple[str, object]:
    out = io.StringIO()
    state = run_chat(agent, feed(lines), Console(file=out, width=100, color_system=None))
    return out.getvalue(), state


def test_instruction_follow_up_save_and_exit(tmp_path: Path, trusted_sandbox) -> None:
    model = scripted([("negative numbers", fenced(V2)), ("", fenced(V1))])
    agent = CodeAgent(model, trusted_sandbox, samples=1, generate_tests=False)
    saved = tmp_path / "absval.py"
    text, state = transcript(
        agent,
        [
            "Write absval(x) for non-negative x.",
            "now make it handle negative numbers",
            "/tests assert absval(-3) == 3",
            "/run",
            f"/save {saved}",
            "/exit",
            "never read",
        ],
    )
    assert state.code == V2
    assert saved.read_text() == V2
    # the follow-up prompt carried the previous code and the change request
    assert V1.strip() in model.prompts[1] and "negative numbers" in model.prompts[1]
    assert "attempt 1 (generate)" in text and "PASSED" in text
    assert "Here is the code:" in text  # the reply streamed as it was generated
    assert "tests set" in text and f"saved 2 lines to {saved}" in text
    assert text.rstrip().endswith("bye")
    assert state.tests == "assert absval(-3) == 3"


def test_help_reset_unknown_and_end_of_input(trusted_sandbox) -> None:
    agent = CodeAgent(scripted([("", fenced(V1))]), trusted_sandbox)
    text, state = transcript(agent, ["Write absval.", "/help", "/reset", "/nope", "/save"])
    assert "/save FILE" in text  # help text
    assert "session reset" in text and "unknown command /nope" in text
    assert "nothing to save yet" not in text and "usage: /save FILE" in text
    assert state.code == ""  # reset forgot it
    assert text.rstrip().endswith("bye")  # end of input ends the session


def test_failing_repair_is_shown_as_it_happens(trusted_sandbox) -> None:
    model = scripted([("ZeroDivisionError", fenced("print(1)")), ("", fenced("print(1/0)"))])
    text, _ = transcript(CodeAgent(model, trusted_sandbox), ["Print one."])
    assert (
        text.index("failed: ZeroDivisionError")
        < text.index("repairing: attempt 2 gets the code and the failures above")
        < text.index("attempt 2 (repair)")
    )
    assert "PASSED" in text


def test_model_switch_takes_effect_and_a_bad_name_keeps_the_session(trusted_sandbox) -> None:
    first, second = scripted([("", fenced(V1))]), scripted([("", fenced(V2))])
    agent = CodeAgent(first, trusted_sandbox)

    def switch_model(spec: str) -> str:
        if spec != "second":
            raise ValueError(f"unknown model {spec!r}")
        agent.set_model(second)
        return f"model: {spec}"

    out = io.StringIO()
    state = run_chat(
        agent,
        feed(["/model nope", "/model second", "Write absval(x)."]),
        Console(file=out, width=100, color_system=None),
        switch_model=switch_model,
    )
    text = out.getvalue()
    assert "error: unknown model 'nope'" in text and "model: second" in text
    assert state.code == V2 and not first.prompts


def test_ctrl_c_cancels_the_step_not_the_session(trusted_sandbox) -> None:
    from tests.fakes import ScriptedChatModel

    class CtrlCFirst(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            if not self.prompts:
                self.prompts.append("interrupted")
                raise KeyboardInterrupt
            return super()._generate(messages, stop, run_manager, **kwargs)

    agent = CodeAgent(CtrlCFirst(rules=[("", fenced(V1))]), trusted_sandbox)
    text, state = transcript(agent, ["Write absval(x).", "Write absval(x) again."])
    assert "cancelled" in text and "PASSED" in text  # the session went on to the next instruction
    assert state.code == V1 and len(state.turns) == 1


def test_a_failed_check_shows_got_and_expected_and_the_repair_its_diff(trusted_sandbox) -> None:
    model = scripted(
        [("got 6", fenced("def sq(x):\n    return x * x\n")), ("", fenced("def sq(x):\n    return x + x\n"))]
    )
    agent = CodeAgent(model, trusted_sandbox)
    text, _ = transcript(agent, ["/tests assert sq(3) == 9", "Write sq."])
    assert "x assert sq(3) == 9: got 6, expected 9" in text
    assert (
        text.index("x assert sq(3) == 9") < text.index("-    return x + x") < text.index("+    return x * x")
    )
    assert "PASSED" in text
