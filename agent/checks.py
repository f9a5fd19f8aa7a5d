"""What decides that code works: the user's tests, else examples found in the instruction.

Never hidden benchmark tests: only what the user wrote. Doctest lines (``>>> f(1)`` followed by
the expected output), call examples (``f(2) ➞ 4``) and ``assert`` lines in the instruction become
test cases; :class:`ragcoder.chains.prompting.instruction.Instruction` reads them.
"""

from __future__ import annotations

from ragcoder.chains.prompting.instruction import read_instruction


def extract_example_tests(instruction: str) -> str | None:
    """Test source built from doctest examples and assert lines in ``instruction`` (None if none)."""
    cases = read_instruction(instruction).examples
    return "\n".join(cases) + "\n" if cases else None
