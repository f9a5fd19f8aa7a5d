"""What a chat user sees of candidates, selection and the verdict (stdin-fed, exact text)."""

from __future__ import annotations

import io

from ragcoder.agent import CodeAgent
from rich.console import Console

from ragcoder.cli.chat import run_chat
from tests.agent.test_loop import OWN_TESTS, RIGHT, RIGHT_TOO, SQUARE, WRONG, sampling


def transcript(agent: CodeAgent, lines: list[str]) -> str:
    queue = list(lines)
    out = io.StringIO()
    run_chat(
        agent, lambda prompt: queue.pop(0) if queue else None, Console(file=out, width=120, color_system=None)
    )
    return out.getvalue()


def test_the_chat_shows_candidates_the_choice_and_the_verdict(trusted_sandbox) -> None:
    model = sampling(WRONG, code=[RIGHT, RIGHT_TOO], tests=[OWN_TESTS])
    text = transcript(CodeAgent(model, trusted_sandbox, samples=3, test_prompts=1), [SQUARE, "/tests"])
    assert "attempt 1 (generate)" in text and "return n + n" in text  # the greedy one, streamed and shown
    assert "4 own tests for square" in text
    assert "candidate 2 (sampled)" in text and "candidate 3 (sampled)" in text
    assert "chose candidate 2: 3 of 3 distinct candidates passed running cleanly" in text
    assert text.index("chose candidate 2") < text.index("return n * n")  # the chosen code is shown
    assert "3 candidates, 2 agree, 4/4 own tests: self-tested" in text  # two codes, the same tests passed
    assert "  [generated] assert square(3) == 9" in text  # /tests lists what the answer was checked against


def test_a_request_with_no_function_says_no_tests_were_generated(trusted_sandbox) -> None:
    model = sampling("print('hi')")
    text = transcript(CodeAgent(model, trusted_sandbox, samples=2), ["Print hi."])
    assert (
        "2 candidates, 2 agree: unverified; the request names no function, so no tests were generated" in text
    )
