"""The instruction's imports and helpers are put back when the model's code leaves them out."""

from __future__ import annotations

from ragcoder.agent import CodeAgent
from ragcoder.agent.prelude import add_missing_prelude, instruction_prelude

from tests.fakes import fenced, scripted

HUMANEVAL_STYLE = '''Complete this Python function. Return the whole function, with its imports.

from typing import List
import math


def is_palindrome(string: str) -> bool:
    """ Test if given string is a palindrome """
    return string == string[::-1]


def longest(strings: List[str]) -> str:
    """ Return the longest string.
    >>> longest(['a', 'bb'])
    'bb'
    """
'''


def test_the_prelude_holds_imports_and_implemented_helpers_not_the_stub() -> None:
    items = instruction_prelude(HUMANEVAL_STYLE)
    sources = [source for source, _ in items]
    assert sources[:2] == ["from typing import List", "import math"]
    assert sources[2].startswith("def is_palindrome(") and "string[::-1]" in sources[2]
    assert not any("def longest" in s for s in sources)  # the stub the model fills is not a helper
    assert [names for _, names in items] == [{"List"}, {"math"}, {"is_palindrome"}]


def test_only_what_the_code_uses_and_lacks_is_added() -> None:
    code = "def longest(strings: List[str]) -> str:\n    return max(strings, key=len)\n"
    fixed = add_missing_prelude(code, HUMANEVAL_STYLE)
    assert fixed.startswith("from typing import List\n")
    assert "import math" not in fixed and "is_palindrome" not in fixed
    assert fixed.endswith(code)
    namespace: dict = {}
    exec(compile(fixed, "fixed", "exec"), namespace)  # our own code: it now loads
    assert namespace["longest"](["a", "bb"]) == "bb"


def test_helpers_are_added_with_the_imports_they_need() -> None:
    instruction = "Use the helper.\n```python\nimport math\n\ndef norm(v):\n    return math.sqrt(sum(x * x for x in v))\n```\n"
    code = "def unit(v):\n    n = norm(v)\n    return [x / n for x in v]\n"
    fixed = add_missing_prelude(code, instruction)
    assert fixed.index("import math") < fixed.index("def norm") < fixed.index("def unit")
    namespace: dict = {}
    exec(compile(fixed, "fixed", "exec"), namespace)
    assert namespace["unit"]([3, 4]) == [0.6, 0.8]


def test_code_that_is_complete_or_unparsable_is_left_alone() -> None:
    complete = "from typing import List\n\ndef f(x: List[int]) -> int:\n    return len(x)\n"
    assert add_missing_prelude(complete, HUMANEVAL_STYLE) == complete
    broken = "def f(:\n    List\n"
    assert add_missing_prelude(broken, HUMANEVAL_STYLE) == broken
    plain = "def f(x):\n    return undefined_name(x)\n"
    assert add_missing_prelude(plain, "Write f(x). No code here.") == plain


def test_the_loop_runs_and_returns_the_completed_code(trusted_sandbox) -> None:
    model = scripted(
        [("", fenced("def longest(strings: List[str]) -> str:\n    return max(strings, key=len)\n"))]
    )
    result = CodeAgent(model, trusted_sandbox, max_attempts=2).invoke(HUMANEVAL_STYLE)
    assert result.passed and result.check == "examples" and len(result.attempts) == 1
    assert result.code.startswith("from typing import List\n")
