"""How often real code uses each API: a popularity prior for ranking documentation.

A question like "pause the program for a few seconds" matches ``signal.pause`` in words, but
``time.sleep`` is what people mean; "encode binary data as base64" matches ``base64.encodebytes``
as well as ``base64.b64encode``. Between near-equal matches, the API that code uses more is the
better answer. The count here is a document frequency: in how many Python files of the standard
library (this interpreter's own ``Lib``, its tests included) the symbol is used, read with a few regular expressions:

- ``json.loads``: files that write ``json.loads`` or ``from json import ... loads``;
- ``zip`` (a builtin): files that call ``zip(`` as a bare name;
- ``datetime.datetime.strftime`` (a method): files that call ``.strftime(`` and name ``datetime``.

The table is written once beside the index (``api-usage.json``) and read by the retriever.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import sysconfig
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

USAGE_FILE = "api-usage.json"
FORMAT = 1

_DOTTED = re.compile(r"\b(?=([A-Za-z_]\w*)\.([A-Za-z_]\w*)\b)")  # overlapping: os.path.join
_CALLED_ATTR = re.compile(r"\.([A-Za-z_]\w*)\s*\(")
_BARE_CALL = re.compile(r"(?<![.\w])([A-Za-z_]\w*)\s*\(")
_FROM_IMPORT = re.compile(r"^[ \t]*from[ \t]+([\w.]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n]+)", re.M)


# Left out: installed third-party packages (they differ between machines, and the table should not),
# and bundled applications whose code is not everyday use. The stdlib's own tests stay in: they are
# code that calls the APIs, and without them the counts are too sparse to help (docs/benchmarks.md,
# "Retrieval", `bench/retrieval_bench.py`).
_SKIPPED_FOLDERS = {"site-packages", "dist-packages", "idlelib", "lib2to3", "ensurepip", "turtledemo"}


def source_files(roots: Iterable[Path] | None = None) -> list[Path]:
    """The ``.py`` files of this interpreter's standard library (or of ``roots``)."""
    folders = list(roots) if roots is not None else [Path(sysconfig.get_paths()["stdlib"])]
    files: list[Path] = []
    for folder in folders:
        for path in folder.rglob("*.py"):
            parts = set(path.relative_to(folder).parts[:-1])
            if not parts & _SKIPPED_FOLDERS:
                files.append(path)
    return sorted(files)


class UsageCounter:
    """Document frequencies of the patterns above, over a set of source files."""

    def __init__(self) -> None:
        self.files = 0
        self.dotted: Counter[str] = Counter()
        self.called_attr: Counter[str] = Counter()
        self.bare_call: Counter[str] = Counter()
        self.from_import: Counter[str] = Counter()
        self.attr_with_name: Counter[str] = Counter()
        self._classes_of: dict[str, set[str]] = {}  # method -> classes whose method is wanted

    def want(self, symbols: Iterable[str], modules: dict[str, str]) -> None:
        """Remember (class, method) pairs to count together (they need both in one file)."""
        for symbol in symbols:
            module = modules.get(symbol, "")
            rest = _rest(symbol, module)
            if len(rest) == 2:
                self._classes_of.setdefault(rest[1], set()).add(rest[0])

    def add(self, text: str) -> None:
        self.files += 1
        self.dotted.update({f"{a}.{b}" for a, b in _DOTTED.findall(text)})
        called = set(_CALLED_ATTR.findall(text))
        self.called_attr.update(called)
        self.bare_call.update(set(_BARE_CALL.findall(text)))
        for module, imported in _FROM_IMPORT.findall(text):
            names = {n.split(" as ")[0].strip() for n in imported.strip("()").replace("\\", "").split(",")}
            self.from_import.update({f"{module}:{n}" for n in names if n.isidentifier()})
        for method in called & self._classes_of.keys():
            self.attr_with_name.update(f"{c}.{method}" for c in self._classes_of[method] if c in text)

    def count(self, symbol: str, module: str) -> int:
        """In how many files ``symbol`` (documented in ``module``) is used."""
        rest = _rest(symbol, module)
        if module == "builtins":
            if len(rest) == 1:
                return self.bare_call[rest[0]]
            return self.called_attr[rest[-1]] if len(rest) == 2 else 0
        if len(rest) == 1:
            last = module.split(".")[-1]
            return self.dotted[f"{last}.{rest[0]}"] + self.from_import[f"{module}:{rest[0]}"]
        if len(rest) == 2:
            return self.attr_with_name[f"{rest[0]}.{rest[1]}"]
        return 0  # a module, or deeper nesting: no prior


def _rest(symbol: str, module: str) -> list[str]:
    if module == "builtins":
        return symbol.split(".")
    if symbol == module:
        return []
    if symbol.startswith(module + "."):
        return symbol[len(module) + 1 :].split(".")
    return symbol.split(".")[-2:] if "." in symbol else [symbol]


def build_usage(symbols: dict[str, str], files: list[Path] | None = None) -> dict[str, int]:
    """``{symbol: files using it}`` for ``symbols`` (symbol -> module that documents it)."""
    counter = UsageCounter()
    counter.want(symbols, symbols)
    for path in files if files is not None else source_files():
        try:
            counter.add(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return {symbol: counter.count(symbol, module) for symbol, module in symbols.items()}


def usage_key(symbols: dict[str, str]) -> str:
    """Identifies a table: the interpreter and the symbols counted (recount when either changes)."""
    digest = hashlib.sha256(json.dumps(sorted(symbols.items())).encode()).hexdigest()[:16]
    return f"{sys.version_info.major}.{sys.version_info.minor}:{digest}"


def ensure_usage(index_path: Path, symbols: dict[str, str]) -> Path:
    """Write the table for ``symbols`` beside the index unless an up-to-date one is there."""
    path = Path(index_path) / USAGE_FILE
    key = usage_key(symbols)
    try:
        if json.loads(path.read_text()).get("key") == key:
            return path
    except (OSError, ValueError):
        pass
    return write_usage(index_path, build_usage(symbols), key)


def write_usage(index_path: Path, usage: dict[str, int], key: str) -> Path:
    path = Path(index_path) / USAGE_FILE
    payload = {"format": FORMAT, "key": key, "usage": usage}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, sort_keys=True))
    tmp.replace(path)
    return path


def read_usage(index_path: Path) -> dict[str, int]:
    """The table beside the index; empty when there is none (a code-only index, an older index)."""
    path = Path(index_path) / USAGE_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if payload.get("format") != FORMAT:
        return {}
    return {str(k): int(v) for k, v in payload.get("usage", {}).items()}


def usage_prior(usage: dict[str, int]) -> dict[str, float]:
    """log(1 + count) scaled to [0, 1] by the most used symbol."""
    top = max(usage.values(), default=0)
    if top <= 0:
        return {}
    scale = math.log1p(top)
    return {symbol: math.log1p(count) / scale for symbol, count in usage.items() if count > 0}
