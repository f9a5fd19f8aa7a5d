"""End to end with the real default model and real Docker: a request in words with no tests and no
examples gets tests from Qwen first, then (unless its first answer is self-tested on them) more
candidates, and the code it chooses passes checks it never saw."""

from __future__ import annotations

import json

import pytest
from ragcoder.agent import CodeAgent

pytestmark = [pytest.mark.slow, pytest.mark.docker]

HIDDEN = """
assert count_vowels("") == 0
assert count_vowels("rhythm") == 0
assert count_vowels("Hello World") == 3
assert count_vowels("AEIOU aeiou") == 10
"""


def test_qwen_writes_candidates_and_tests_and_the_choice_holds_up(qwen_chat, docker_sandbox) -> None:
    instruction = (
        "Write a Python function `count_vowels(s)` that returns how many vowels (a, e, i, o, u, in "
        "either case) the string s contains."
    )
    agent = CodeAgent(qwen_chat, docker_sandbox, samples=3, max_attempts=1)
    result = agent.invoke(instruction)
    trace = json.dumps(result.to_dict(), indent=1)[:4000]
    assert result.function == "count_vowels" and result.check == "runs", trace
    generated = result.counted_tests("generated")
    assert len(generated) >= 3, trace  # the model's asserts, parsed and run against every candidate
    assert all(t.name.startswith("assert count_vowels(") for t in generated)
    assert result.verdict in ("self-tested", "unverified")
    if len(result.candidates) == 1:  # the greedy answer passed >= 80% of at least 3 own tests
        assert result.verdict == "self-tested" and "no others sampled" in result.notes[-1], trace
    else:
        assert [c.origin for c in result.candidates] == ["greedy", "sampled", "sampled"], trace
        assert result.summary().startswith("3 candidates")
    hidden = docker_sandbox.run_tests(result.code, HIDDEN)
    assert hidden.passed, trace + hidden.summary()
    if result.verdict == "self-tested":  # then at least 80% of the counted tests passed on the chosen code
        winner = result.candidates[result.selection.winner - 1]
        assert sum(winner.statuses[t.name] == "pass" for t in generated) >= 0.8 * len(generated)
