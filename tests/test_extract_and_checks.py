"""Code extraction from model replies, and tests taken from instructions."""

from __future__ import annotations

from ragcoder.agent.checks import extract_example_tests
from ragcoder.chains.prompting.extract import extract_code


def test_fenced_block_with_prose_around_it() -> None:
    reply = "Sure! Here it is:\n```python\ndef f(x):\n    return x + 1\n```\nThis adds one."
    assert extract_code(reply) == "def f(x):\n    return x + 1\n"


def test_several_blocks_keep_definitions_and_drop_usage_only_blocks() -> None:
    reply = (
        "```python\ndef helper(x):\n    return x * 2\n```\nThen:\n"
        "```python\ndef f(x):\n    return helper(x) + 1\n```\nUsage:\n```python\nprint(f(2))\n```"
    )
    code = extract_code(reply)
    assert "def helper" in code and "def f" in code
    assert "print(f(2))" not in code


def test_untagged_and_other_language_blocks() -> None:
    reply = "```bash\npip install nothing\n```\n```\ndef g():\n    return 3\n```"
    assert extract_code(reply).strip() == "def g():\n    return 3"


def test_truncated_reply_is_trimmed_to_parsable_code() -> None:
    reply = "```python\ndef f(x):\n    return x\n\ndef g(y):\n    return (y +"
    code = extract_code(reply)
    assert code.strip() == "def f(x):\n    return x"


def test_unfenced_reply_drops_leading_prose() -> None:
    reply = "Here is a function that doubles.\ndef double(x):\n    return 2 * x\n"
    assert extract_code(reply).strip() == "def double(x):\n    return 2 * x"


def test_doctest_examples_and_asserts_become_tests() -> None:
    instruction = """Write add(a, b).
    >>> add(1, 2)
    3
    >>> add("a", "b")
    'ab'
    >>> print(add(1, 1))
    2
    assert add(0, 0) == 0
    """
    tests = extract_example_tests(instruction)
    assert tests == 'assert add(1, 2) == 3\nassert add("a", "b") == \'ab\'\nassert add(0, 0) == 0\n'


def test_no_examples_means_no_tests() -> None:
    assert extract_example_tests("Write a function fib(n) returning the n-th Fibonacci number.") is None


def test_docstring_close_is_not_part_of_the_expected_output() -> None:
    prompt = (
        'def f(x):\n    """Double it.\n    >>> f(2)\n    4\n    """\n\ndef g(x):\n    """>>> g(1)\n    1"""\n'
    )
    assert extract_example_tests(prompt) == "assert f(2) == 4\nassert g(1) == 1\n"


def test_every_humaneval_dev_prompt_with_examples_gets_its_last_example() -> None:
    from ragcoder.finetune.humaneval import load_problems

    problem = {p.task_id: p for p in load_problems("dev")}["HumanEval/2"]
    tests = extract_example_tests(problem.prompt)
    assert tests == "assert truncate_number(3.5) == 0.5\n"


def test_arrow_and_equals_examples_become_tests_when_the_value_is_a_literal() -> None:
    # `is_happy(a)`: `a` is prose for the string "a", not a Python name: no test from it
    text = (
        "Examples:\n    will_it_fly([1, 2], 5) ➞ False\n    digit_sum('abAB') => 131\n"
        "    iscube(1) ==> true\n    f(3) == 6.00\n    g(5, 19) -> 19 - 5 - 6 = 8\n    is_happy(a) => False\n"
    )
    assert extract_example_tests(text) == (
        "assert will_it_fly([1, 2], 5) == False\nassert digit_sum('abAB') == 131\n"
        "assert iscube(1) == True\nassert f(3) == 6.00\nassert g(5, 19) == 8\n"
    )  # a worked sum: its last term is the value


def test_example_variants_shorten_list_arguments_and_leave_strings_alone() -> None:
    from ragcoder.agent.checks import example_variants, raised_on
    from ragcoder.agent.select import assert_cases

    examples = assert_cases(
        ["assert f([1, 2, 3], 'ab') == 6", "assert f((4, 5), 'xy') == 9", "assert f([7], 'z') == 7"],
        "example",
    )
    variants = example_variants(examples, "f")
    assert [v.expr for v in variants] == [
        "f([1, 2], 'ab')",
        "f([2, 3], 'ab')",
        "f((4,), 'xy')",
        "f((5,), 'xy')",
    ]
    assert example_variants(examples, "g") == []
    outputs = {"f([1, 2], 'ab')": "3", "f([2, 3], 'ab')": "raised IndexError"}  # the other two hung
    assert raised_on(outputs, variants) == [
        "f([2, 3], 'ab'): raised IndexError",
        "f((4,), 'xy'): timeout",
        "f((5,), 'xy'): timeout",
    ]
