"""The default corpus: documentation of commonly used standard-library modules, rendered with pydoc.

It works on any machine (no package needed). One chunk per module summary, per public function,
per public class and per documented public method of those classes. Only the modules in
``STDLIB_MODULES`` are covered, so ``ragcoder index --stdlib`` takes a few minutes on 2 cores. On
request (``include_rest``) and when Debian's ``python3.11-doc`` is installed, the reST pages of the
same modules are added, split at object directives with Sphinx-qualified symbols; measured on the
benchmark's tuning half they made retrieval worse (more near-duplicate distractors), so they are off
by default.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import pydoc
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ragcoder.chains.retrieval.splitters import Chunk, split_rest

# The modules people ask about most when writing everyday Python (data, text, files, processes,
# dates, concurrency, testing). Extend freely: each module adds a chunk per public function, class
# and documented method.
STDLIB_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "array",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "builtins",
    "bz2",
    "calendar",
    "cmath",
    "codecs",
    "collections",
    "collections.abc",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "contextvars",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "errno",
    "fnmatch",
    "fractions",
    "functools",
    "getpass",
    "glob",
    "graphlib",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "http.client",
    "importlib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "keyword",
    "locale",
    "logging",
    "lzma",
    "math",
    "mimetypes",
    "multiprocessing",
    "numbers",
    "operator",
    "os",
    "os.path",
    "pathlib",
    "pickle",
    "platform",
    "pprint",
    "queue",
    "random",
    "re",
    "secrets",
    "shelve",
    "shlex",
    "shutil",
    "signal",
    "socket",
    "sqlite3",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "sys",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "traceback",
    "types",
    "typing",
    "unicodedata",
    "unittest",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "xml.etree.ElementTree",
    "zipfile",
    "zlib",
    "zoneinfo",
)

DEBIAN_DOC_SOURCES = Path("/usr/share/doc/python3.11/html/_sources/library")

API_DOC_CHARS = 1500  # stored text per function/class (what the model sees and BM25 searches)
EMBED_SUMMARY_CHARS = 360  # what the embedder sees: signature + first paragraph (speed: see facts.md)
MAX_METHODS_LISTED = 40
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
log = logging.getLogger(__name__)


@dataclass
class ModuleDocs:
    module: str
    chunks: list[Chunk] = field(default_factory=list)


def _first_paragraphs(doc: str, limit: int) -> str:
    out = ""
    for paragraph in doc.strip().split("\n\n"):
        candidate = f"{out}\n\n{paragraph}" if out else paragraph
        if len(candidate) > limit and out:
            break
        out = candidate
    return out[:limit]


def _signature(obj: object) -> str:
    try:
        return str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"


def _render_routine(obj: object, qualname: str) -> str:
    """pydoc's plain-text rendering of one function or method, headed by its qualified name."""
    try:
        rendered = pydoc.plain(pydoc.plaintext.document(obj, qualname.rsplit(".", 1)[-1]))
    except Exception:  # pydoc trips over some C objects
        rendered = f"{qualname.rsplit('.', 1)[-1]}{_signature(obj)}\n    {inspect.getdoc(obj) or ''}"
    body = inspect.cleandoc(rendered.split("\n", 1)[1]) if "\n" in rendered else ""
    return f"{qualname}{_signature(obj)}\n{body}".strip()


def _public_names(module: object, module_name: str) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    top = module_name.split(".")[0]
    keep = []
    for name in names:
        obj = getattr(module, name, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        origin = (getattr(obj, "__module__", "") or "").lstrip("_")
        if inspect.isclass(obj) and origin == "builtins" and module_name != "builtins":
            continue  # an alias of a builtin type (typing.Text is str, socket.timeout is TimeoutError)
        # re-exports from another public module are documented there (os.path is its own entry)
        if (
            module_name != "builtins"
            and getattr(module, "__all__", None) is None
            and not origin.startswith(top)
        ):
            continue
        keep.append(name)
    return sorted(set(keep))


def _class_methods(cls: type) -> list[tuple[str, object]]:
    methods = []
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in ("__init__", "__call__", "__enter__"):
            continue
        if isinstance(member, classmethod | staticmethod):
            member = member.__func__
        if inspect.isroutine(member) and inspect.getdoc(member):
            methods.append((name, getattr(cls, name, member)))
    return methods


def module_docs(module_name: str) -> ModuleDocs:
    """The pydoc chunks of one module (empty when it cannot be imported here)."""
    docs = ModuleDocs(module_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
    except Exception:
        return docs
    names = _public_names(module, module_name)
    summary = _first_paragraphs(inspect.getdoc(module) or "", 900)
    module_text = f"Module {module_name}\n\n{summary}\n\nPublic API: {', '.join(names[:120])}".strip()
    docs.chunks.append(
        Chunk(
            module_text,
            module_name,
            "module-doc",
            module_name,
            embed_text=f"Module {module_name}: {_first_paragraphs(summary, EMBED_SUMMARY_CHARS)}",
        )
    )
    for name in names:
        qualname = name if module_name == "builtins" else f"{module_name}.{name}"
        try:  # one object pydoc or inspect trips over costs its own chunks, not the module's
            docs.chunks.extend(_object_chunks(getattr(module, name), qualname, module_name))
        except Exception as exc:
            log.warning("skipping %s: %s: %s", qualname, type(exc).__name__, exc)
    for chunk in docs.chunks:  # reprs of default values carry addresses that change every run
        chunk.text = _ADDRESS.sub("", chunk.text)
        chunk.embed_text = _ADDRESS.sub("", chunk.embed_text or "") or None
    return docs


def _object_chunks(obj: object, qualname: str, module_name: str) -> list[Chunk]:
    doc = inspect.getdoc(obj) or ""
    if not inspect.isclass(obj):
        text = _render_routine(obj, qualname)[:API_DOC_CHARS]
        embed = f"{qualname}{_signature(obj)}\n{_first_paragraphs(doc, EMBED_SUMMARY_CHARS)}"
        return [Chunk(text, module_name, "api-doc", qualname, embed_text=embed[: EMBED_SUMMARY_CHARS + 200])]
    methods = _class_methods(obj)
    listing = "\n".join(
        f"  {m}{_signature(f)}: {(inspect.getdoc(f) or '').splitlines()[0][:100]}"
        for m, f in methods[:MAX_METHODS_LISTED]
    )
    header = f"class {qualname}{_signature(obj)}"
    text = (
        f"{header}\n{_first_paragraphs(doc, 900)}\n\nMethods:\n{listing}" if listing else f"{header}\n{doc}"
    )
    embed = f"{header}\n{_first_paragraphs(doc, EMBED_SUMMARY_CHARS)}\nMethods: {', '.join(m for m, _ in methods[:25])}"
    chunks = [
        Chunk(
            text[:API_DOC_CHARS],
            module_name,
            "api-doc",
            qualname,
            embed_text=embed[: EMBED_SUMMARY_CHARS + 250],
        )
    ]
    for method_name, method in methods:
        if method_name.startswith("_"):
            continue
        method_qualname = f"{qualname}.{method_name}"
        method_doc = inspect.getdoc(method) or ""
        method_embed = (
            f"{method_qualname}{_signature(method)}\n{_first_paragraphs(method_doc, EMBED_SUMMARY_CHARS)}"
        )
        chunks.append(
            Chunk(
                _render_routine(method, method_qualname)[:API_DOC_CHARS],
                module_name,
                "api-doc",
                method_qualname,
                embed_text=method_embed[: EMBED_SUMMARY_CHARS + 200],
            )
        )
    return chunks


# reST pages per module where the page name is not "<module>.rst.txt" (or one page is not enough)
REST_PAGES: dict[str, tuple[str, ...]] = {
    "builtins": ("functions", "stdtypes"),
    "asyncio": (
        "asyncio-task",
        "asyncio-runner",
        "asyncio-queue",
        "asyncio-sync",
        "asyncio-stream",
        "asyncio-subprocess",
    ),
    "xml.etree.ElementTree": ("xml.etree.elementtree",),
}


def rest_pages(module_name: str, sources: Path | None = None) -> list[Path]:
    """The Debian reST pages that document ``module_name`` (those present)."""
    folder = sources or DEBIAN_DOC_SOURCES
    names = REST_PAGES.get(module_name, (module_name,))
    return [path for name in names if (path := folder / f"{name}.rst.txt").is_file()]


def rest_docs(page: Path) -> ModuleDocs:
    """One Debian ``python3.11-doc`` reST page, split at headings and object directives."""
    return ModuleDocs(str(page), split_rest(str(page), page.read_text(encoding="utf-8", errors="replace")))


def iter_stdlib_docs(
    modules: tuple[str, ...] = STDLIB_MODULES, include_rest: bool = False
) -> Iterator[ModuleDocs]:
    """pydoc chunks per module, then the matching reST pages when Debian's docs are present."""
    for name in modules:
        yield module_docs(name)
    if include_rest and DEBIAN_DOC_SOURCES.is_dir():
        for name in modules:
            for page in rest_pages(name):
                try:
                    docs = rest_docs(page)
                except (OSError, MemoryError, RecursionError) as exc:
                    log.warning("skipping %s: %s", page, exc)
                    continue
                if docs.chunks:
                    yield docs


def python_version_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def corpus_description(include_rest: bool = True) -> str:
    """Which stdlib corpus ``index_stdlib`` builds on this machine (benchmarks print it)."""
    text = f"pydoc of {len(STDLIB_MODULES)} stdlib modules (Python {python_version_tag()})"
    if include_rest and DEBIAN_DOC_SOURCES.is_dir():
        return text + f" + Debian python3.11-doc reST pages ({DEBIAN_DOC_SOURCES})"
    if include_rest:
        return text + " (python3.11-doc reST not installed: pydoc only)"
    return text + " (reST excluded)"
