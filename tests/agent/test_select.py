"""Tests from the request and selection by execution, without a model or a sandbox: parsing the
model's tests, finding the function, grouping and scoring candidates, dropping broken tests,
verdicts and seeds."""

from __future__ import annotations

import pytest
from ragcoder.agent.candidates import normalise, seed_for
from ragcoder.agent.result import AgentResult, Attempt, TestCase
from ragcoder.agent.select import (
    assert_cases,
    choose,
    codet_groups,
    drop_broken_tests,
    mbr_scores,
    probes_for,
    user_test_cases,
    verdict_for,
)
from ragcoder.chains.prompting.test_gen import find_function_name, messages_for_tests, parse_generated_tests
from ragcoder.sandbox import ExecResult

REPLY = """Here are the tests:
```python
assert add(1, 2) == 3
assert add(1, 2) == 3
assert add(-1, 1) == 0, "cancels out"
assert add(0, 0) = 0
assert add(helper(1), 1) == 3
assert sum([1, 2]) == 3
assert add(*[1, 2]) == 3
assert add(
    [1][0],
    2,
) == 3
assert [add(i, i) for i in range(3)] == [0, 2, 4]
assert add(x, 1) == 2
assert add(10, 2"""


def test_generated_tests_are_parsed_deduplicated_and_checked() -> None:
    tests = parse_generated_tests(REPLY, "add")
    assert tests == [
        "assert add(1, 2) == 3",  # once, though the model wrote it twice
        "assert add(-1, 1) == 0",  # the message is dropped: the harness reports the values itself
        "assert add(*[1, 2]) == 3",
        "assert add([1][0], 2) == 3",  # an assert over several lines, joined
        "assert [add(i, i) for i in range(3)] == [0, 2, 4]",  # names it binds itself are fine
    ]  # gone: a syntax error, an undefined helper, one not calling add, an undefined x, the cut-off tail
    assert parse_generated_tests(REPLY, "add", allowed={"helper"})[2] == "assert add(helper(1), 1) == 3"
    assert parse_generated_tests("no tests here", "add") == []


def test_the_test_prompt_names_the_function_and_the_count() -> None:
    messages = messages_for_tests("Write add(a, b).", "add", count=5)
    text = messages[-1].content
    assert "Write add(a, b)." in text and "5 different test cases for the function `add`" in text


@pytest.mark.parametrize(
    ("instruction", "entry_point", "name"),
    [
        ("anything", "solve", "solve"),
        (
            "Complete this.\n\ndef helper(x):\n    return x\n\ndef target(x):\n    '''Doc.'''\n",
            None,
            "target",
        ),
        ("Write a Python function `has_close(numbers, t) -> bool`.\n\nCheck it.", None, "has_close"),
        ("Write a function called fizz that prints numbers", None, "fizz"),
        ("Write a function named `parse_row` for csv lines", None, "parse_row"),
        ("is_prime(7) returns True and is_prime(8) returns False", None, "is_prime"),
        ("Print hello world.", None, None),
        ("Use len(x) and print(x) to show the list.", None, None),
    ],
)
def test_the_function_name_is_found_or_not(
    instruction: str, entry_point: str | None, name: str | None
) -> None:
    assert find_function_name(instruction, entry_point) == name


def run(
    candidate: int, statuses: dict[str, str], passed: bool = True, outputs: dict | None = None
) -> Attempt:
    return Attempt(
        number=1,
        kind="generate",
        code=f"# {candidate}",
        result=ExecResult(),
        passed=passed,
        candidate=candidate,
        statuses=statuses,
        outputs=outputs or {},
    )


def generated(*names: str) -> list[TestCase]:
    return [TestCase(name=n, origin="generated") for n in names]


def test_codet_groups_candidates_by_the_tests_they_pass_and_scores_size_times_tests() -> None:
    p = {"t1": "pass", "t2": "pass", "t3": "fail"}
    runs = [run(1, p), run(2, {"t1": "pass", "t2": "fail"}), run(3, dict(p)), run(4, {"t3": "pass"})]
    groups = codet_groups(runs, {1: 2, 2: 1, 3: 1, 4: 1}, ["t1", "t2", "t3"])
    assert groups[0] == {
        "candidates": [1, 3],
        "size": 3,
        "tests_passed": 2,
        "score": 6,
    }  # 1 was generated twice
    assert [g["score"] for g in groups] == [6, 1, 1]
    assert groups[1]["candidates"] == [2]  # ties: the larger group, then the earlier candidate


def test_agreement_can_beat_passing_more_tests() -> None:
    # three candidates agree on two tests (score 6); one passes all five on its own (score 5)
    agree = {"a": "pass", "b": "pass"}
    runs = [run(1, {n: "pass" for n in "abcde"}), run(2, agree), run(3, dict(agree)), run(4, dict(agree))]
    selection = choose(runs, {1: 1, 2: 1, 3: 1, 4: 1}, generated(*"abcde"))
    assert selection.method == "codet" and selection.winner == 2 and selection.agree == 3
    assert "group of 3 passes 2/5 own tests (score 6, next 5)" in selection.reason
    assert selection.other is not None  # what output agreement would have chosen is recorded too


def test_hard_checks_filter_before_any_ranking() -> None:
    tests = [*assert_cases(["assert f(1) == 1"], "example"), *generated("g1", "g2")]
    example = tests[0].name
    bad = run(1, {example: "fail", "g1": "pass", "g2": "pass"}, passed=False)
    good = run(2, {example: "pass", "g1": "fail", "g2": "fail"})
    selection = choose([bad, good], {1: 3, 2: 1}, tests)
    assert selection.winner == 2 and selection.method == "only"
    assert "passed the instruction's examples" in selection.reason
    nobody = choose([bad, run(3, {example: "fail"}, passed=False)], {1: 1, 3: 1}, tests)
    assert (
        nobody.method == "none" and nobody.winner == 1 and "none passed" in nobody.reason
    )  # closer by own tests


def test_mbr_prefers_the_outputs_most_others_share() -> None:
    runs = [
        run(1, {}, outputs={"f(1)": "1", "f(2)": "4"}),
        run(2, {}, outputs={"f(1)": "1", "f(2)": "2"}),
        run(3, {}, outputs={"f(1)": "1", "f(2)": "2"}),
    ]
    assert mbr_scores(runs, {1: 1, 2: 1, 3: 1}) == {1: 2, 2: 3, 3: 3}
    assert mbr_scores(runs, {1: 3, 2: 1, 3: 1}) == {1: 6, 2: 5, 3: 5}  # repeats count as votes
    assert choose(runs, {1: 1, 2: 1, 3: 1}, [], method="mbr").winner == 2
    with pytest.raises(ValueError, match="selection 'vote'"):
        choose(runs, {}, [], method="vote")


def test_a_generated_test_that_hangs_or_raises_for_everyone_is_dropped() -> None:
    tests = generated("hangs", "raises", "mixed", "fine")
    runs = [
        run(1, {"hangs": "timeout", "raises": "error", "mixed": "error", "fine": "pass"}),
        run(2, {"hangs": "timeout", "raises": "timeout", "mixed": "pass", "fine": "fail"}),
        run(3, {}, passed=False),  # did not load: it has no say
    ]
    drop_broken_tests(tests, runs)
    assert [t.dropped for t in tests] == [
        "it hung for every candidate",
        "it raised (or hung) for every candidate",
        "",
        "",
    ]
    assert choose(runs, {1: 1, 2: 1, 3: 1}, tests).groups[0]["tests_passed"] == 1  # only counted tests rank
    drop_broken_tests(tests, runs[:1] + runs[2:])  # one candidate loaded: its failures are its own
    assert [t.dropped for t in tests] == ["", "", "", ""]


def test_verdicts_never_make_a_failure_look_like_a_pass() -> None:
    example = assert_cases(["assert f(1) == 1"], "example")
    own = generated("g1", "g2")
    assert verdict_for(run(1, {example[0].name: "pass"}), example + own) == "verified"
    assert verdict_for(run(1, {example[0].name: "fail"}, passed=False), example + own) == "unverified"
    assert verdict_for(run(1, {"g1": "pass", "g2": "pass"}), own) == "self-tested"
    assert verdict_for(run(1, {"g1": "pass", "g2": "fail"}), own) == "unverified"
    five = generated("g1", "g2", "g3", "g4", "g5")  # the model's expected values are often wrong
    four_of_five = {f"g{i}": "pass" for i in range(1, 5)} | {"g5": "fail"}
    assert verdict_for(run(1, four_of_five), five) == "self-tested"
    assert verdict_for(run(1, four_of_five | {"g4": "error"}), five) == "unverified"
    assert verdict_for(run(1, {"g1": "pass", "g2": "pass"}, passed=False), own) == "unverified"  # did not run
    assert verdict_for(run(1, {}), []) == "unverified"  # ran cleanly, checked by nothing
    dropped = [TestCase("g1", "generated", dropped="it hung for every candidate")]
    assert verdict_for(run(1, {"g1": "timeout"}), dropped) == "unverified"  # no counted test passed


def test_user_tests_split_into_cases_with_the_names_the_sandbox_reports() -> None:
    source = "import math\n\nassert f(1) == 1\n\ndef test_two():\n    assert f(2) == 2\n\ndef check(c):\n    assert c(3) == 3\n"
    cases = user_test_cases(source, "f")
    assert [(c.name, bool(c.snippet)) for c in cases] == [
        ("", True),  # setup
        ("assert f(1) == 1", True),
        ("test_two", True),
        ("", True),  # the check function's definition
        ("check(f)", False),  # the sandbox calls it with the entry point
    ]
    assert cases[1].snippet.startswith("_rc_arm(LIMIT)\n") and cases[0].snippet == "import math\n"
    assert user_test_cases("assert (", None)[0].snippet == "assert ("  # sent as is: reported as failing


def test_probes_are_the_distinct_calls_of_the_counted_generated_tests() -> None:
    tests = [
        *generated("assert f(1) == 2", "assert f(1) + f(2) == 5"),
        TestCase("assert f(9) == 0", "generated", dropped="x"),
    ]
    assert [p.expr for p in probes_for(tests, "f")] == ["f(1)", "f(2)"]


def test_seeds_repeat_for_the_same_task_and_differ_by_round_and_row() -> None:
    assert seed_for("task", 1, 0) == seed_for("task", 1, 0)
    assert len({seed_for("task", r, row) for r in (1, 2, 3) for row in range(8)}) == 24
    assert seed_for("task", 1, 0) != seed_for("other task", 1, 0)
    assert 0 <= seed_for("x" * 1000, 9, 7) < 2**31


def test_code_is_compared_for_repeats_without_trailing_space() -> None:
    assert normalise("def f():\n    return 1   \n\n") == normalise("\ndef f():\n    return 1")
    assert normalise("def f():\n    return 1\n") != normalise("def f():\n    return 2\n")


def test_the_summary_line_and_counts() -> None:
    example = assert_cases(["assert f(1) == 1"], "example")
    tests = (
        example + generated("g1", "g2") + [TestCase("g3", "generated", dropped="it hung for every candidate")]
    )
    winner = run(1, {example[0].name: "pass", "g1": "pass", "g2": "fail"})
    others = [run(i, dict(winner.statuses)) for i in (2, 3)]
    result = AgentResult(
        instruction="i",
        code="",
        passed=True,
        check="examples",
        stop_reason="passed",
        verdict="verified",
        candidates=[winner, *others],
        test_cases=tests,
        selection=choose([winner, *others], {1: 1, 2: 1, 3: 1}, tests),
    )
    assert result.summary() == "3 candidates, 3 agree, 1/1 examples, 1/2 own tests: verified"
    counts = result.to_dict()
    assert counts["verdict"] == "verified" and counts["candidates"] == 3 and counts["own_tests"] == 2
    assert counts["own_tests_dropped"] == 1 and counts["own_tests_passed"] == 1 and counts["hard_tests"] == 1
    assert counts["candidate_runs"][0]["tests"] == "PPF-"  # one letter per test, in test order


def test_repairs_count_rounds_even_when_an_earlier_candidate_stays_the_winner() -> None:
    greedy = run(1, {"g1": "fail"})
    result = AgentResult(
        instruction="i", code="", passed=False, check="tests", stop_reason="repeated", attempts=[greedy] * 3
    )
    assert result.repairs == 2  # three rounds: the greedy candidate won each, two repair rounds ran
