"""Split source files into retrieval chunks: Python by function/class (``ast``), Markdown and reST by
heading (reST also at ``.. function::``-style directives), plain text by paragraph.

Every chunk knows its ``source``, ``symbol`` (function, ``Class.method`` or heading path), 1-based
inclusive ``start_line``/``end_line`` and ``kind``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import PurePath

SPLITTER_VERSION = "3"  # bump when chunking changes: every file is then re-indexed

MAX_CODE_CHARS = 1500
MAX_PROSE_CHARS = 1200
# longer lines are minified or generated (data tables, base64): junk chunks, and Python's parser
# can run out of memory on one (a 200k-character expression raised MemoryError)
MAX_LINE_CHARS = 10_000
# undecodable bytes and control characters: text in another 8-bit encoding has a few per cent
# (accented letters), binary data a third or more
MAX_BINARY_FRACTION = 0.1
_NOT_TEXT = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f\ufffd]")

PYTHON_SUFFIXES = {".py", ".pyi"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
REST_SUFFIXES = {".rst", ".rest"}
TEXT_SUFFIXES = {".txt"}
INDEXABLE_SUFFIXES = PYTHON_SUFFIXES | MARKDOWN_SUFFIXES | REST_SUFFIXES | TEXT_SUFFIXES


@dataclass
class Chunk:
    text: str
    """What is stored, shown to the model and searched by BM25."""
    source: str
    """A file path or, for pydoc chunks, a module name."""
    kind: str
    """``code``, ``markdown``, ``rest``, ``text``, ``api-doc`` (one documented function, class or
    method: pydoc, or a reST object directive) or ``module-doc``."""
    symbol: str = ""
    start_line: int = 0
    end_line: int = 0
    embed_text: str | None = None
    """What the embedder sees when it should differ from ``text`` (a shorter summary)."""

    def text_for_embedding(self) -> str:
        if self.embed_text is not None:
            return self.embed_text
        head = f"{self.symbol}\n" if self.symbol and self.symbol not in self.text[:200] else ""
        return head + self.text


def text_problem(data: bytes) -> str | None:
    """Why a file's bytes are no text to index (binary, or a minified line), or None when they are."""
    if b"\0" in data:
        return "binary data (NUL bytes), not text"
    text = data.decode("utf-8", errors="replace")
    bad = sum(1 for _ in _NOT_TEXT.finditer(text))
    if bad > MAX_BINARY_FRACTION * len(text):
        return f"binary data ({bad / len(text):.0%} of it undecodable or control characters), not text"
    longest = max(((len(line), number) for number, line in enumerate(text.splitlines(), 1)), default=(0, 0))
    if longest[0] > MAX_LINE_CHARS:
        return (
            f"line {longest[1]} has {longest[0]:,} characters (minified or generated?); "
            f"the limit is {MAX_LINE_CHARS:,}"
        )
    return None


def split_file(path: str, text: str) -> list[Chunk]:
    """Chunks for one file, chosen by its suffix; unknown suffixes are split as plain text."""
    suffix = PurePath(path).suffix.lower()
    if suffix in PYTHON_SUFFIXES:
        return split_python(path, text)
    if suffix in MARKDOWN_SUFFIXES:
        return split_markdown(path, text)
    if suffix in REST_SUFFIXES:
        return split_rest(path, text)
    return split_text(path, text)


# -- Python ---------------------------------------------------------------------------------------

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _node_start(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def split_python(path: str, text: str, max_chars: int = MAX_CODE_CHARS) -> list[Chunk]:
    """One chunk per top-level function or class; a long class becomes a header chunk plus one chunk
    per method; module-level code between definitions (not bare imports) becomes ``<module>`` chunks.
    Files that do not parse are split as plain text."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # the last two: deeply nested code
        return split_text(path, text, kind="code")
    lines = text.splitlines()
    chunks: list[Chunk] = []
    loose: list[ast.stmt] = []

    def flush_loose() -> None:
        if loose and not all(isinstance(n, ast.Import | ast.ImportFrom) for n in loose):
            blocks = [
                (_node_start(n), _lines(lines, _node_start(n), n.end_lineno or n.lineno)) for n in loose
            ]
            for start, end, body in _pack(blocks, max_chars):
                chunks.append(Chunk(body, path, "code", "<module>", start, end))
        loose.clear()

    for node in tree.body:
        if isinstance(node, _DEFS):
            flush_loose()
            chunks.extend(_split_definition(path, lines, node, "", max_chars))
        else:
            loose.append(node)
    flush_loose()
    return [c for c in chunks if c.text.strip()]


def _split_definition(
    path: str, lines: list[str], node: ast.stmt, prefix: str, max_chars: int
) -> list[Chunk]:
    name = prefix + node.name  # type: ignore[attr-defined]
    start, end = _node_start(node), node.end_lineno or node.lineno
    body = _lines(lines, start, end)
    if len(body) <= max_chars:
        return [Chunk(body, path, "code", name, start, end)]
    methods = (
        [n for n in getattr(node, "body", []) if isinstance(n, _DEFS)]
        if isinstance(node, ast.ClassDef)
        else []
    )
    if not methods:  # a long function: windows of whole lines
        return [Chunk(b, path, "code", name, s, e) for s, e, b in _line_windows(lines, start, end, max_chars)]
    chunks: list[Chunk] = []
    header_end = _node_start(methods[0]) - 1
    signatures = [f"    {lines[_node_start(m) - 1].strip()} ..." for m in methods]
    header = _lines(lines, start, header_end).rstrip() + "\n" + "\n".join(signatures)
    chunks.append(Chunk(header[: max_chars * 2], path, "code", name, start, header_end))
    for method in methods:
        chunks.extend(_split_definition(path, lines, method, name + ".", max_chars))
    return chunks


def _lines(lines: list[str], start: int, end: int) -> str:
    return "\n".join(lines[start - 1 : end])


def _line_windows(lines: list[str], start: int, end: int, max_chars: int) -> list[tuple[int, int, str]]:
    blocks = [(n, lines[n - 1]) for n in range(start, end + 1)]
    return _pack(blocks, max_chars)


def _pack(blocks: list[tuple[int, str]], max_chars: int, joiner: str = "\n") -> list[tuple[int, int, str]]:
    """Greedily join consecutive (start_line, text) blocks into pieces of at most ``max_chars``
    (a single longer block is cut). Returns (start_line, end_line, text)."""
    pieces: list[tuple[int, int, str]] = []
    current: list[str] = []
    current_start = current_end = 0
    for start, block in blocks:
        block_end = start + block.count("\n")
        if current and sum(len(c) + 1 for c in current) + len(block) > max_chars:
            pieces.append((current_start, current_end, joiner.join(current)))
            current = []
        if not current:
            current_start = start
        while len(block) > max_chars:  # a single oversized block: cut it
            pieces.append((start, block_end, block[:max_chars]))
            block = block[max_chars:]
        current.append(block)
        current_end = block_end
    if current:
        pieces.append((current_start, current_end, joiner.join(current)))
    return [p for p in pieces if p[2].strip()]


# -- prose ----------------------------------------------------------------------------------------


def _paragraphs(lines: list[str], first: int, last: int) -> list[tuple[int, str]]:
    """Blank-line separated paragraphs of lines[first..last] (1-based), keeping fenced code together."""
    paragraphs: list[tuple[int, str]] = []
    current: list[str] = []
    start = first
    in_fence = False
    for number in range(first, last + 1):
        line = lines[number - 1]
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if not line.strip() and not in_fence:
            if current:
                paragraphs.append((start, "\n".join(current)))
                current = []
            continue
        if not current:
            start = number
        current.append(line)
    if current:
        paragraphs.append((start, "\n".join(current)))
    return paragraphs


def _sections_to_chunks(
    path: str, lines: list[str], sections: list[tuple[int, str]], kind: str, max_chars: int
) -> list[Chunk]:
    """sections: (start_line, symbol) sorted by line; each runs until the next one starts."""
    if not sections or sections[0][0] > 1:
        sections = [(1, ""), *sections]
    chunks: list[Chunk] = []
    for index, (start, symbol) in enumerate(sections):
        end = sections[index + 1][0] - 1 if index + 1 < len(sections) else len(lines)
        for s, e, body in _pack(_paragraphs(lines, start, end), max_chars, "\n\n"):
            chunks.append(Chunk(body, path, kind, symbol, s, e))
    return chunks


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def split_markdown(path: str, text: str, max_chars: int = MAX_PROSE_CHARS) -> list[Chunk]:
    """Sections by ATX heading; the symbol is the heading path ("Install > From source")."""
    lines = text.splitlines()
    sections: list[tuple[int, str]] = []
    trail: list[str] = []
    in_fence = False
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else _MD_HEADING.match(line)
        if match:
            level = len(match.group(1))
            trail = [*trail[: level - 1], match.group(2)]
            sections.append((number, " > ".join(t for t in trail if t)))
    return _sections_to_chunks(path, lines, sections, "markdown", max_chars)


_REST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+<>:._!])\1{2,}\s*$")
_REST_ANY_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+(?:py:)?([\w-]+)::\s*(.*)$")
_REST_MARKUP_ONLY = re.compile(
    r"^\s*\.\.(?:\s+_[^:]*:.*|\s+\|.*|\s+(?:index|versionadded|versionchanged|deprecated)::.*|\s*)$"
)
_REST_MODULE_DIRECTIVES = {"module", "currentmodule"}
_REST_OBJECT_DIRECTIVES = {
    "function",
    "class",
    "method",
    "attribute",
    "data",
    "exception",
    "decorator",
    "classmethod",
    "staticmethod",
    "coroutinefunction",
    "coroutinemethod",
    "abstractmethod",
    "decoratormethod",
    "property",
    "awaitablefunction",
    "awaitablemethod",
}
_REST_CONTAINERS = {"class", "exception"}


def _rest_object_name(argument: str) -> str:
    """``dumps(obj, *, skipkeys=False)`` -> ``dumps``; ``str.split(sep=None)`` -> ``str.split``."""
    match = re.match(r"[\w.]+", argument.strip())
    return match.group(0).strip(".") if match else ""


def _qualify(name: str, module: str, container: str) -> str:
    """Sphinx's rule: a name inside a class directive belongs to the class, else to the current
    module (no prefix for builtins pages, which declare no module)."""
    if container:
        return name if name.startswith(container + ".") else f"{container}.{name}"
    if module and not name.startswith(module + "."):
        return f"{module}.{name}"
    return name


def split_rest(path: str, text: str, max_chars: int = MAX_PROSE_CHARS) -> list[Chunk]:
    """Sections by underlined heading and at Python-domain object directives (``.. function::``,
    nested ``.. method::`` ...), whose symbols are qualified like Sphinx does (``.. module:: json``
    + ``.. function:: dumps`` -> ``json.dumps``; a method inside ``.. class:: Counter`` ->
    ``collections.Counter.most_common``). Text that dedents out of an object's body returns to the
    enclosing object or heading. Object chunks get a plain-text summary for the embedder."""
    lines = text.splitlines()
    sections: list[tuple[int, str]] = []
    heading = module = ""
    objects: list[tuple[int, str, bool]] = []  # open object directives: (indent, symbol, is container)
    object_symbols: set[str] = set()

    def enclosing() -> str:
        return objects[-1][1] if objects else heading

    for index, line in enumerate(lines):
        number = index + 1
        stripped = line.strip()
        if not stripped or _REST_ADORNMENT.match(line):
            continue
        indent = len(line) - len(line.lstrip())
        if _REST_MARKUP_ONLY.match(line):  # labels, comments, index entries: neither text nor structure
            continue
        directive = _REST_ANY_DIRECTIVE.match(line)
        kind = directive.group(2) if directive else ""
        if kind in _REST_MODULE_DIRECTIVES:
            module = directive.group(3).strip() if directive else module
            continue
        if (
            not directive
            and index + 1 < len(lines)
            and _REST_ADORNMENT.match(lines[index + 1])
            and len(lines[index + 1].rstrip()) >= len(stripped)
        ):
            overline = index > 0 and _REST_ADORNMENT.match(lines[index - 1])
            heading, objects = rest_plain(stripped), []
            sections.append((number - 1 if overline else number, heading))
            continue
        closed = False
        while objects and indent <= objects[-1][0]:
            objects.pop()
            closed = True
        if directive and kind in _REST_OBJECT_DIRECTIVES:
            name = _rest_object_name(directive.group(3))
            if name:
                container = next(
                    (symbol for _, symbol, is_container in reversed(objects) if is_container), ""
                )
                symbol = _qualify(name, module, container)
                objects.append((indent, symbol, kind in _REST_CONTAINERS))
                object_symbols.add(symbol)
                sections.append((number, symbol))
                continue
        if closed:
            sections.append((number, enclosing()))
    chunks = _sections_to_chunks(path, lines, sections, "rest", max_chars)
    for chunk in chunks:
        is_object = chunk.symbol in object_symbols
        chunk.kind = "api-doc" if is_object else "rest"
        chunk.embed_text = rest_embed_text(chunk.symbol, chunk.text, is_object)
    return chunks


REST_EMBED_CHARS = 420  # what the embedder sees of a reST chunk (its cost grows with the length)
_REST_ROLE = re.compile(r":[\w:-]+:`(?:[^`<]*<)?~?([^`>]+)>?`")
_REST_NOISE = re.compile(
    r"^\s*\.\.\s+(?:index|versionadded|versionchanged|deprecated|seealso|note|"
    r"impl-detail|testsetup|doctest|audit-event|availability|sectionauthor|moduleauthor)::.*$",
    re.MULTILINE,
)


def rest_plain(text: str) -> str:
    """reST markup reduced to the words a reader sees (roles, literals, directive markers)."""
    text = _REST_NOISE.sub("", text)
    text = re.sub(r"^\s*\.\.\s+(?:py:)?[\w-]+::\s*", "", text, flags=re.MULTILINE)
    text = _REST_ROLE.sub(
        lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), text
    )
    text = text.replace("``", "").replace("**", "")
    text = re.sub(r"(?<![\w*])\*(\w[^*]*?)\*(?![\w*])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def rest_embed_text(symbol: str, text: str, is_object: bool) -> str:
    """The embedder's view of a reST chunk: the qualified name, then the plain text, shortened."""
    plain = rest_plain(text)
    short = symbol.rsplit(".", 1)[-1]
    if is_object and plain.startswith(short) and not plain.startswith(symbol):
        plain = symbol[: len(symbol) - len(short)] + plain  # "dumps(obj, ...)" -> "json.dumps(obj, ...)"
    elif symbol and not plain.startswith(symbol):
        plain = f"{symbol}: {plain}"
    return plain[:REST_EMBED_CHARS]


def split_text(path: str, text: str, max_chars: int = MAX_PROSE_CHARS, kind: str = "text") -> list[Chunk]:
    lines = text.splitlines()
    return [
        Chunk(body, path, kind, "", s, e)
        for s, e, body in _pack(_paragraphs(lines, 1, len(lines)), max_chars, "\n\n")
    ]
