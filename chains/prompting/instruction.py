"""The one reader of code inside text: code fences, a safe parse, and what an instruction shows.

:func:`read_instruction` gives everything the agent reads from an instruction: its code regions
and the words around them, the function stubs it asks for, the one function to write (the
name the tests call, the parameters the examples fill), the modules it imports, the names it
uses and defines, the imports and helpers it provides, and the doctest, arrow and ``assert``
examples it gives. The retrieval gate, the example checks and the prelude all read through it;
the reply extractor shares its fence regex (:func:`fences`) and its safe parse
(:func:`parse_or_none`).
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from dataclasses import dataclass
from functools import cached_property, lru_cache

from ragcoder.chains.prompting.examples import example_asserts, prose_asserts
from ragcoder.chains.prompting.safe_parse import parse_or_none

# Group 3 is empty for a fence left open by a reply cut at the token limit.
FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(```|\Z)", re.S)
_CODE_START_RE = re.compile(r"^(?:from\s+[\w.]+\s+import\s|import\s+\w|def\s|class\s|@)", re.M)
_IMPORT_LINE_RE = re.compile(r"^(?:from\s+[\w.]+\s+import\s+[\w., ()*]+|import\s+[\w., ]+)\s*$", re.M)
_DEF_NAME_RE = re.compile(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", re.M)
# a signature named in the words: "Write a Python function `hex_key(num)`."
_NAMED_SIGNATURE_RE = re.compile(r"`([A-Za-z_]\w*)\(([^()`]*)\)`")
BUILTIN_NAMES = frozenset(dir(builtins))
# how words name the function to write: "`name(args)`", "a function called name", "name(3) returns 6"
_BACKTICK_CALL_RE = re.compile(r"`\s*(?:def\s+)?([A-Za-z_]\w*)\s*\(")
_CALLED_RE = re.compile(r"\bfunction\s+(?:called\s+|named\s+)?`?([A-Za-z_]\w*)`?", re.I)
_BARE_CALL_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\([^()]*\)")
_NOT_FUNCTION_NAMES = BUILTIN_NAMES | {"function", "def", "return", "returns", "lambda", "e", "i", "g", "f"}

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


# -- code in text -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """One fenced block: its language tag (lower-case, '' when untagged), body, and whether it closed."""

    lang: str
    body: str
    closed: bool


def fences(text: str) -> list[Fence]:
    """Every fenced block in ``text``, in order; the last may be open (``closed`` False)."""
    return [Fence(lang.lower(), body, bool(end)) for lang, body, end in FENCE_RE.findall(text)]


def parse_fragment(source: str) -> ast.Module | None:
    """Parse code that may end in a signature and docstring with no body yet."""
    for candidate in (source, source.rstrip() + "\n    pass\n"):
        tree = parse_or_none(candidate)
        if tree is not None:
            assert isinstance(tree, ast.Module)
            return tree
    return None


def code_regions(text: str) -> list[str]:
    """The closed fenced blocks, or else everything from the first line that starts code."""
    fenced = [f.body for f in fences(text) if f.closed and f.body.strip()]
    if fenced:
        return fenced
    start = _CODE_START_RE.search(text)
    return [text[start.start() :]] if start else []


# -- names in code ----------------------------------------------------------------------------------


def is_stub(node: Definition) -> bool:
    """A signature left for the model to fill: only a docstring, ``pass`` or ``...``."""
    return is_stub_body(node.body)


def is_stub_body(body: list[ast.stmt]) -> bool:
    """Statements that hold no code: docstrings (or other constants), ``pass``, ``...``."""
    for statement in body:
        if isinstance(statement, ast.Pass):
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # the docstring, or ``...``
        return False
    return True


def bound_by_import(node: ast.Import | ast.ImportFrom) -> set[str]:
    """The names an import statement binds (``import os.path`` binds ``os``; ``*`` binds none we know)."""
    return {(alias.asname or alias.name).split(".")[0] for alias in node.names if alias.name != "*"}


def names_used_and_bound(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(names the code reads, names it binds anywhere: defs, classes, arguments, imports, stores).

    Builtins are in neither set; callers that treat them as bound add :data:`BUILTIN_NAMES`.
    """
    used: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, Definition):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound |= bound_by_import(node)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return used, bound


# -- what an instruction shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Provided:
    """An import or an implemented helper the instruction's code gives, with the names it binds."""

    source: str
    names: frozenset[str]


@dataclass(frozen=True)
class Instruction:
    """An instruction read once; each part is computed when first asked for."""

    text: str

    @cached_property
    def regions(self) -> tuple[str, ...]:
        """Its code: the fenced blocks, or else everything from the first line that starts code."""
        return tuple(code_regions(self.text))

    @cached_property
    def region_trees(self) -> tuple[ast.Module | None, ...]:
        """Each code region parsed on its own (None where one is not Python), read once."""
        return tuple(parse_fragment(region) for region in self.regions)

    @cached_property
    def code(self) -> str | None:
        """The code regions joined (None when the instruction holds no code)."""
        return "\n".join(self.regions) if self.regions else None

    @cached_property
    def words(self) -> str:
        """The text with the code regions taken out."""
        words = self.text
        for region in self.regions:
            words = words.replace(region, "")
        return words

    @cached_property
    def tree(self) -> ast.Module | None:
        """The joined code parsed, a trailing bodiless signature allowed (None: no code, or not Python)."""
        return parse_fragment(self.code) if self.code is not None else None

    @cached_property
    def stubs(self) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, ...]:
        """Functions with no code: a docstring, ``pass`` or ``...`` (imports inside the body allowed,
        as HumanEval/115 has), at any depth; each code region parsed on its own, so one that is not
        Python hides no other."""
        found = []
        for tree in self.region_trees:
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    body = [s for s in node.body if not isinstance(s, ast.Import | ast.ImportFrom)]
                    if body and is_stub_body(body):
                        found.append(node)
        return tuple(found)

    @cached_property
    def imported_modules(self) -> frozenset[str]:
        """Every module the code imports, at any depth (``from a.b import c`` gives ``a.b``)."""
        modules: set[str] = set()
        for node in ast.walk(self.tree) if self.tree is not None else ():
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
        return frozenset(modules)

    @cached_property
    def undefined_names(self) -> frozenset[str]:
        """Names the code reads but does not bind itself (builtins included: callers drop what they know)."""
        if self.tree is None:
            return frozenset()
        used, bound = names_used_and_bound(self.tree)
        return frozenset(used - bound)

    @cached_property
    def docstrings(self) -> tuple[str, ...]:
        """The module's and every function's and class's docstring."""
        if self.tree is None:
            return ()
        nodes = [self.tree, *(n for n in ast.walk(self.tree) if isinstance(n, Definition))]
        return tuple(doc for node in nodes if (doc := ast.get_docstring(node)))

    @cached_property
    def provided(self) -> tuple[Provided, ...]:
        """Its top-level imports and implemented helper definitions, in order (not the stubs to fill)."""
        items: list[Provided] = []
        for region, tree in zip(self.regions, self.region_trees, strict=True):
            if tree is None:  # prose mixed in: take the import lines alone
                for line in _IMPORT_LINE_RE.findall(region):
                    parsed = parse_fragment(line)
                    if parsed is not None and isinstance(parsed.body[0], ast.Import | ast.ImportFrom):
                        items.append(Provided(line.strip(), frozenset(bound_by_import(parsed.body[0]))))
                continue
            source = region if region.endswith("\n") else region + "\n"
            for node in tree.body:
                if isinstance(node, ast.Import | ast.ImportFrom):
                    items.append(Provided(ast.unparse(node), frozenset(bound_by_import(node))))
                elif isinstance(node, Definition) and not is_stub(node):
                    segment = ast.get_source_segment(source, node, padded=False)
                    if segment:
                        decorators = "".join(f"@{ast.unparse(d)}\n" for d in node.decorator_list)
                        items.append(Provided(decorators + segment, frozenset({node.name})))
        return tuple(items)

    @cached_property
    def function_names(self) -> frozenset[str]:
        """Names of the functions whose signature the text shows (``def name(`` on a line of its own)."""
        return frozenset(_DEF_NAME_RE.findall(textwrap.dedent(self.text)))

    @cached_property
    def target(self) -> tuple[str, tuple[str, ...]] | None:
        """The one function to write and its parameters' names: the only stub, else the only
        signature named in backticks (None when there is not exactly one, or it takes ``*args``)."""
        if self.stubs:
            if len(self.stubs) > 1 or self.stubs[0].args.vararg or self.stubs[0].args.kwarg:
                return None
            args = self.stubs[0].args
            return self.stubs[0].name, tuple(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
        named = set(_NAMED_SIGNATURE_RE.findall(self.text))
        if len(named) != 1:
            return None
        name, params = named.pop()
        names = tuple(p.split(":")[0].split("=")[0].strip() for p in params.split(",") if p.strip())
        return (name, names) if all(n.isidentifier() for n in names) else None

    @cached_property
    def function_name(self) -> str | None:
        """The function the request asks for, the one its tests call (None when it names none).

        In order: the only stub; the :attr:`target`; then the first name the words give that is
        not a builtin: a backticked call (`` `name(x)` ``), a ``def name(``, "a function called
        name", a call in the prose (``name(3) returns 6``).
        """
        if len(self.stubs) == 1:
            return self.stubs[0].name  # even with ``*args``, which leaves it no target
        if self.target is not None:
            return self.target[0]
        for pattern in (_BACKTICK_CALL_RE, _DEF_NAME_RE, _CALLED_RE, _BARE_CALL_RE):
            for match in pattern.finditer(self.text):
                name = match.group(1)
                if name not in _NOT_FUNCTION_NAMES and not name[0].isupper():
                    return name
        return None

    @cached_property
    def examples(self) -> tuple[str, ...]:
        """Test cases the text gives, as ``assert`` lines (:mod:`ragcoder.chains.prompting.examples`)."""
        cases = example_asserts(textwrap.dedent(self.text), self.function_names, self.target)
        for prose in (self.words, *self.docstrings):  # examples inside sentences
            cases += [c for c in prose_asserts(prose, self.function_name, self.target) if c not in cases]
        return tuple(cases)


@lru_cache(maxsize=64)  # the gate, the checks, the prelude and the tests' reader share one reading
def read_instruction(text: str) -> Instruction:
    """The instruction's code, words, stubs, names, imports, helpers and examples (read lazily)."""
    return Instruction(text)
