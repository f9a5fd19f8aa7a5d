"""The one reader of code in text: fences, the safe parse, and what an instruction shows."""

from __future__ import annotations

import ast

import pytest
from ragcoder.chains.prompting.instruction import (
    Fence,
    code_regions,
    fences,
    names_used_and_bound,
    parse_fragment,
    parse_or_none,
    read_instruction,
)
from ragcoder.chains.prompting.test_gen import find_function_name

HUMANEVAL_STYLE = '''Complete this Python function.

from typing import List
import math


def is_palindrome(string: str) -> bool:
    """ Test if given string is a palindrome """
    return string == string[::-1]


def longest(strings: List[str]) -> str:
    """ Return the longest string; see `json.dumps`.
    >>> longest(['a', 'bb'])
    'bb'
    >>> print(longest(['x']))
    x
    """
'''


def test_fences_give_language_body_and_whether_they_closed() -> None:
    text = "Intro\n```Python title\nx = 1\n```\nthen\n```\ny = 2\n```\nand cut: ```py\nz = ("
    assert fences(text) == [
        Fence("python", "x = 1\n", True),
        Fence("", "y = 2\n", True),
        Fence("py", "z = (", False),
    ]


def test_code_regions_are_closed_fences_else_the_text_from_the_first_code_line() -> None:
    assert code_regions("Fix it:\n```python\ndef f(): pass\n```\nand ```py\nopen") == ["def f(): pass\n"]
    assert code_regions("Complete it.\n\nimport os\ndef f(): ...\n") == ["import os\ndef f(): ...\n"]
    assert code_regions("Write a function that adds two numbers.") == []


def test_the_safe_parse_says_none_for_anything_that_is_not_python() -> None:
    assert isinstance(parse_or_none("x = 1"), ast.Module)
    assert isinstance(parse_or_none("f(1) + 2", "eval"), ast.Expression)
    assert parse_or_none("def f(:") is None
    assert parse_or_none("x = 1\x00") is None  # null bytes: ValueError on 3.11, caught alike
    assert parse_or_none("x = 1", "eval") is None


def test_a_fragment_may_end_in_a_signature_with_no_body() -> None:
    tree = parse_fragment('def f(x):\n    """Doc."""')
    assert tree is not None and isinstance(tree.body[0], ast.FunctionDef)
    assert parse_fragment('def f(x):\n    """Doc."""\n    return (') is None


def test_names_used_and_bound_leave_builtins_to_the_caller() -> None:
    tree = ast.parse(
        "import os.path as p, sys\nfrom m import *\n\ndef f(a, *rest):\n    try:\n        b = g(a)\n"
        "    except Exception as e:\n        return len(e.args)\n    return [c for c in rest] + h\n"
    )
    used, bound = names_used_and_bound(tree)
    assert used == {"g", "a", "Exception", "len", "e", "c", "rest", "h"}
    assert bound == {"p", "sys", "f", "a", "rest", "b", "e", "c"}


def test_a_humaneval_stub_is_read_into_its_parts() -> None:
    read = read_instruction(HUMANEVAL_STYLE)
    assert read.code is not None and read.code.startswith("from typing import List")
    assert read.words == "Complete this Python function.\n\n"
    assert [stub.name for stub in read.stubs] == ["longest"]  # is_palindrome has code: not a stub
    assert read.imported_modules == {"typing", "math"}
    assert read.undefined_names == {"str", "bool"}  # builtins: the caller decides what is known
    assert read.docstrings[0].strip() == "Test if given string is a palindrome"
    assert "`json.dumps`" in read.docstrings[1]
    assert [(p.source.split("\n")[0], set(p.names)) for p in read.provided] == [
        ("from typing import List", {"List"}),
        ("import math", {"math"}),
        ("def is_palindrome(string: str) -> bool:", {"is_palindrome"}),
    ]
    assert read.function_names == {"is_palindrome", "longest"}
    assert read.examples == ("assert longest(['a', 'bb']) == 'bb'",)  # a printed result is not a literal


def test_words_only_have_no_code_no_tree_and_no_stubs() -> None:
    read = read_instruction("Parse the text with json.loads and return the 'name' key")
    assert read.regions == () and read.code is None and read.tree is None
    assert read.words == read.text and read.stubs == () and read.provided == ()
    assert read.imported_modules == frozenset() and read.undefined_names == frozenset()


def test_a_region_with_prose_mixed_in_still_provides_its_import_lines() -> None:
    read = read_instruction("Use these:\n```python\nimport math\nfrom os import path, sep\nthen call it\n```")
    assert read.tree is None
    assert [(p.source, set(p.names)) for p in read.provided] == [
        ("import math", {"math"}),
        ("from os import path, sep", {"path", "sep"}),
    ]


def test_a_stub_may_import_inside_its_body() -> None:
    read = read_instruction('def max_fill(grid):\n    import math\n    """Buckets."""\n')
    assert [s.name for s in read.stubs] == ["max_fill"] and read.imported_modules == {"math"}


def test_examples_come_from_doctests_arrows_and_asserts_of_the_functions_shown() -> None:
    text = (
        "def fly(q, w):\n    ...\n\nExamples:\n    fly([1, 2], 5) ➞ False\n    other(1) => 2\n"
        "    fly([3], 1) ==> true\n    fly([], 0) -> 1 + 1\nassert fly([1], 9) is True\nassert broken(\n"
    )
    assert read_instruction(text).examples == (
        "assert fly([1, 2], 5) == False",
        "assert fly([3], 1) == True",
        "assert fly([1], 9) is True",
    )
    assert read_instruction("Write fib(n): the n-th Fibonacci number.").examples == ()


def test_examples_in_words_comments_and_input_output_pairs_fit_the_one_function_to_write() -> None:
    stub = (
        'def hex_key(num):\n    """Count prime hex digits.\n    For num = "AB" the output should be 1.\n'
        '    For num = 7 the output should be a number.\n    hex_key("2")   # returns 1\n'
        '    hex_key("5 B") -> 1 + 1 = 2\n    Input: "D"\n    Output: 1\n    Input: x = "3", y = 1\n'
        '    Output: 1\n    """\n'
    )
    read = read_instruction(stub)
    assert read.target == ("hex_key", ("num",))
    assert read.examples == (
        'assert hex_key("2") == 1',
        'assert hex_key("5 B") == 2',  # a worked sum: its last term is the value
        "assert hex_key('AB') == 1",
        "assert hex_key('D') == 1",
    )  # "a number" is prose, and x, y are not hex_key's parameters
    words = "Write a Python function `pick(arr, k)`.\n\nInput: arr = [3, 1], k = 1\nOutput: [3]\n"
    assert read_instruction(words).examples == ("assert pick([3, 1], 1) == [3]",)
    two = "Write `a(x)` and `b(x)`.\nFor x = 1 the output should be 2.\n"
    assert read_instruction(two).target is None and read_instruction(two).examples == ()


@pytest.mark.parametrize(
    ("text", "examples"),
    [
        # the example after a sentence, as one-line requests write it
        (
            "Write a Python function `f(n)` that sums the digits of n. For n = 123 the output should be 6.",
            ("assert f(123) == 6",),
        ),
        (
            "Write `digits(n)`, e.g. `digits(123)` returns `6`, and digits(40) == 4.",
            ("assert digits(123) == 6", "assert digits(40) == 4"),
        ),
        (
            "Write `rev(s)`; rev('a. b') should return 'b .a'. Also rev('') is ''.",
            ("assert rev('a. b') == 'b .a'", "assert rev('') == ''"),
        ),
        ("Write `area(w, h)`: for w = 2, h = 3 the result is 6.5.", ("assert area(2, 3) == 6.5",)),
        (
            "Write `ok(x)`: ok(2) returns true, ok(3) -> False.",
            ("assert ok(2) == True", "assert ok(3) == False"),
        ),
        (
            'def count(s):\n    """count(\'ab\') returns 2  # two letters\n    count(\'\') returns 0\n    """\n',
            ("assert count('ab') == 2", "assert count('') == 0"),
        ),  # a docstring's sentences too
        # prose, not examples: a value that goes on ("6 times n"), a bare tuple or the value and
        # more words ("3, 9"), arguments that are not literals, another function, a wrapped line
        ("Write `f(n)`: f(7) returns 6 times n. f(3) returns 3, 9. f(n) returns 0. g(1) returns 2.", ()),
        ("Write `f(n)`. f(2) returns 4\nif it can.\nFor m = 1 the output should be 2.", ()),
    ],
)
def test_examples_inside_sentences_are_read_and_prose_is_not(text: str, examples: tuple[str, ...]) -> None:
    assert read_instruction(text).examples == examples


@pytest.mark.parametrize(
    ("text", "name", "target"),
    [
        ('def solve(a, b):\n    """Add."""\n', "solve", ("solve", ("a", "b"))),
        # a helper with code, then a stub with no docstring: the stub, not the first ``def``
        ("def helper(x):\n    return x\n\ndef solve(x):\n    pass\n", "solve", ("solve", ("x",))),
        ('def pack(*items):\n    """Pack."""\n', "pack", None),  # ``*args``: named, no parameters to fill
        ("Write a Python function `f(n)` that returns n squared.", "f", ("f", ("n",))),
        ("```text\nnot python (\n```\n\n```python\ndef g(x):\n    ...\n```\n", "g", ("g", ("x",))),
        ("Write `a(x)` and `b(x)`.", "a", None),  # two signatures: tests call the first, no target
        ("Print hello world.", None, None),
    ],
)
def test_the_function_to_write_is_one_reading_for_tests_and_examples(
    text: str, name: str | None, target: tuple | None
) -> None:
    read = read_instruction(text)
    assert (read.function_name, read.target) == (name, target)
    assert find_function_name(text) == name and find_function_name(text, "entry") == "entry"
