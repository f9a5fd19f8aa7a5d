"""The retrieval gate: no docs for self-contained function stubs, docs for everything else."""

from __future__ import annotations

import pytest
from ragcoder.chains.retrieval.gate import decide_retrieval

STUB = 'from typing import List\n\n\ndef evens(xs: List[int]) -> List[int]:\n    """Keep the even numbers.\n    >>> evens([1, 2])\n    [2]\n    """\n'


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("Write a function that reads a CSV file and returns its rows as dicts", "a request in words"),
        ("Complete this Python function.\n\nimport zipfile\n\n" + STUB, "the stub imports zipfile"),
        (
            'def total(order: Order) -> Decimal:\n    """Sum the order lines."""\n',
            "names it does not define: Decimal, Order",
        ),
        ('Use `json.loads`:\n```python\ndef parse(s):\n    """Parse s."""\n```', "the task names json.loads"),
        (
            'def add(a, b):\n    """Add them with the operator module."""\n    ...\n',
            "the task names operator",
        ),
        ("Fix this:\n```python\ndef f(x):\n    return x + 1\n```", "code to change"),
        ("def f(\n", "does not parse"),
        (
            'def max_fill(grid):\n    import math\n    """Buckets."""\n',
            "the stub imports math",
        ),  # import first
    ],
)
def test_what_gets_docs(instruction: str, reason: str) -> None:
    decision = decide_retrieval(instruction)
    assert decision.retrieve and reason in decision.reason


@pytest.mark.parametrize(
    "instruction",
    [
        STUB,
        "Complete this Python function. Return the whole function, with its imports.\n\n" + STUB,
        "Finish it:\n```python\n" + STUB + "```\nMake it fast.",
        'def is_palindrome(s: str) -> bool:\n    return s == s[::-1]\n\n\ndef longest(s: str) -> str:\n    """Longest palindromic prefix."""\n    pass\n',
        'def pairs(xs):\n    """All (a, b) with a < b; e.g. pairs([1, 2]) == [(1, 2)]."""\n    ...\n',
    ],
)
def test_self_contained_stubs_get_none(instruction: str) -> None:
    decision = decide_retrieval(instruction)
    assert not decision.retrieve and "self-contained function stub" in decision.reason


def test_on_humaneval_dev_only_the_stub_that_imports_math_is_retrieved_for() -> None:
    from ragcoder.finetune.evaluate import agent_tasks
    from ragcoder.finetune.humaneval import load_problems

    tasks = agent_tasks(load_problems("dev"))  # the instructions the eval gives the agent
    retrieved = [task_id for task_id, task in tasks.items() if decide_retrieval(task.instruction).retrieve]
    assert len(tasks) == 82 and retrieved == ["HumanEval/32"]


def test_humaneval_asked_in_words_is_retrieved_for_and_keeps_what_the_stub_said() -> None:
    from ragcoder.finetune.evaluate import agent_tasks
    from ragcoder.finetune.humaneval import load_problems

    problems = load_problems("dev")
    words = agent_tasks(problems, "words")
    assert len(words) == 82 and all(decide_retrieval(t.instruction).retrieve for t in words.values())
    first = words["HumanEval/0"].instruction
    assert first.startswith(
        "Write a Python function `has_close_elements(numbers: List[float], threshold: float) -> bool`."
    )
    assert ">>> has_close_elements([1.0, 2.0, 3.0], 0.5)" in first and "def " not in first
    helper = words["HumanEval/10"].instruction  # make_palindrome's prompt defines is_palindrome
    assert "```python\ndef is_palindrome(string: str) -> bool:" in helper
    assert words["HumanEval/10"].entry_point == "make_palindrome"
    with pytest.raises(ValueError, match="prompt style 'prose': choose one of stub, words"):
        agent_tasks(problems, "prose")


def test_every_question_of_the_retrieval_benchmark_is_retrieved_for() -> None:
    import json
    from pathlib import Path

    path = Path(__file__).parents[2] / "bench" / "data" / "retrieval_questions.jsonl"
    questions = [json.loads(line)["question"] for line in path.read_text().splitlines() if line.strip()]
    assert len(questions) >= 60 and all(decide_retrieval(q).retrieve for q in questions)


@pytest.mark.parametrize(
    ("instruction", "stdlib", "reason"),
    [
        ("Write fizzbuzz(n) returning the list of strings for 1..n", False, "names no API: your own"),
        ("how do I turn a JSON string into a Python dict", False, "names no API"),
        ("Parse the text with json.loads and return the 'name' key", True, "the request names json.loads"),
        ("Read the rows with the csv module", True, "the request names csv"),
        ("Use `itertools` to pair them up", True, "the request names itertools"),
    ],
)
def test_requests_in_words_get_stdlib_docs_only_when_they_name_an_api(
    instruction: str, stdlib: bool, reason: str
) -> None:
    decision = decide_retrieval(instruction)
    assert decision.retrieve and decision.stdlib is stdlib and reason in decision.reason


def test_the_agent_with_a_real_chroma_index_puts_docs_in_the_prompt_only_when_the_gate_says_so(
    retrieval_index, retrieval_embeddings, trusted_sandbox
) -> None:
    from ragcoder.agent import CodeAgent
    from ragcoder.chains.retrieval.retriever import open_retriever

    from tests.fakes import fenced, scripted

    slug = (
        "import re\n\ndef slugify(title):\n    return re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')\n"
    )
    from ragcoder.chains.retrieval.indexing import index_stdlib

    index_stdlib(
        index_path=retrieval_index, embeddings=retrieval_embeddings, progress=False, modules=("json",)
    )
    model = scripted([("", fenced(slug))])
    retriever = open_retriever(retrieval_index, k=2, embeddings=retrieval_embeddings)
    agent = CodeAgent(
        model,
        trusted_sandbox,
        retriever=retriever,
        retrieval_gate=decide_retrieval,
        samples=1,
        generate_tests=False,
    )
    words = agent.invoke("Turn a title into a lowercase url slug with dashes: slugify(title)")
    assert words.retrieval.startswith("2 doc(s): a request in words that names no API: your own")
    assert len(words.sources) == 2 and not any(s.startswith("json") for s in words.sources)
    indexed_body = "'-'.join(title.lower().split())"  # the indexed slugify, from pkg/text_tools.py
    assert any("text_tools.py" in source for source in words.sources) and indexed_body in model.prompts[0]
    stub = agent.invoke('def slugify(title: str) -> str:\n    """Lowercase url slug with dashes."""\n')
    assert stub.sources == [] and stub.retrieval.startswith("skipped: a self-contained function stub")
    assert "slugify" in model.prompts[1] and indexed_body not in model.prompts[1]
    named = agent.invoke("Slugify the title, then wrap it with json.dumps: slug_json(title)")
    assert named.retrieval == "2 doc(s): the request names json.dumps"
    assert any(s.startswith("json") for s in named.sources)
