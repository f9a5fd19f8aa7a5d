"""Chunking: Python by function/class, Markdown/reST by heading, text by paragraph; pydoc corpus."""

from __future__ import annotations

import textwrap

from ragcoder.chains.retrieval.splitters import (
    rest_plain,
    split_file,
    split_markdown,
    split_python,
    split_rest,
    split_text,
)
from ragcoder.chains.retrieval.stdlib_corpus import module_docs

PYTHON_SOURCE = textwrap.dedent(
    '''\
    """Module doc."""
    import os

    LIMIT = 3


    def top(a, b):
        """Add."""
        return a + b


    @staticmethod
    def decorated():
        return 1


    class Small:
        def m(self):
            return 2
    '''
)


def test_python_split_by_function_and_class_with_symbols_and_lines() -> None:
    chunks = split_python("pkg/mod.py", PYTHON_SOURCE)
    by_symbol = {c.symbol: c for c in chunks}
    assert set(by_symbol) == {"<module>", "top", "decorated", "Small"}
    assert (by_symbol["top"].start_line, by_symbol["top"].end_line) == (7, 9)
    assert by_symbol["decorated"].start_line == 12  # the decorator line starts the chunk
    assert by_symbol["decorated"].text.startswith("@staticmethod")
    assert "LIMIT = 3" in by_symbol["<module>"].text
    assert all(c.kind == "code" and c.source == "pkg/mod.py" for c in chunks)


def test_long_class_becomes_header_plus_method_chunks() -> None:
    methods = "\n".join(f"    def method_{i}(self):\n        return {'x' * 60!r}\n" for i in range(40))
    source = f"class Big:\n    '''Big class.'''\n\n{methods}"
    chunks = split_python("big.py", source, max_chars=400)
    symbols = [c.symbol for c in chunks]
    assert symbols[0] == "Big"
    assert "def method_0(self): ..." in chunks[0].text and len(chunks[0].text) <= 800  # capped header
    assert symbols[1:] == [f"Big.method_{i}" for i in range(40)]
    assert chunks[1].start_line == 4


def test_long_function_is_cut_into_line_windows() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(300))
    chunks = split_python("long.py", f"def long():\n{body}\n", max_chars=500)
    assert len(chunks) > 3
    assert {c.symbol for c in chunks} == {"long"}
    assert all(len(c.text) <= 500 for c in chunks)
    assert chunks[0].start_line == 1 and chunks[-1].end_line == 301


def test_unparsable_python_falls_back_to_paragraphs() -> None:
    chunks = split_python("bad.py", "def broken(:\n    pass\n\nprint('x')\n")
    assert [c.kind for c in chunks] == ["code"]
    assert "broken" in chunks[0].text


def test_markdown_sections_carry_the_heading_path_and_ignore_fenced_hashes() -> None:
    text = "# Guide\nintro\n\n## Install\n\n```sh\n# not a heading\npip install x\n```\n\n## Use\nrun it\n"
    chunks = split_markdown("README.md", text)
    assert [c.symbol for c in chunks] == ["Guide", "Guide > Install", "Guide > Use"]
    assert "# not a heading" in chunks[1].text
    assert chunks[2].start_line == 11


def test_rest_splits_at_headings_and_python_directives() -> None:
    text = textwrap.dedent(
        """\
        json --- JSON encoder
        =====================

        Intro text.

        .. function:: dumps(obj)

           Serialize *obj*.

        Basic usage
        -----------

        Example.
        """
    )
    chunks = split_rest("json.rst", text)
    assert [c.symbol for c in chunks] == ["json --- JSON encoder", "dumps", "Basic usage"]
    assert [c.kind for c in chunks] == ["rest", "api-doc", "rest"]


REST_MODULE_PAGE = textwrap.dedent(
    """    :mod:`collections` --- Container datatypes
    ==========================================

    .. module:: collections

    .. _counter-objects:

    .. class:: Counter([iterable-or-mapping])

       A :class:`dict` subclass for counting hashable objects.

       .. versionadded:: 3.1

       .. method:: most_common([n])

          Return a list of the *n* most common elements and their counts, using
          :func:`~heapq.nlargest` for ``n``.

       .. attribute:: total

          The sum of the counts.

    Counters support rich comparison operators.

    .. function:: namedtuple(typename, field_names)

       Factory function for tuples with named fields.

    .. method:: str.split(sep=None)

       Not qualified twice.
    """
)


def test_rest_qualifies_symbols_like_sphinx_and_returns_to_the_heading_after_a_dedent() -> None:
    chunks = split_rest("collections.rst", REST_MODULE_PAGE)
    assert [(c.symbol, c.kind) for c in chunks] == [
        ("collections --- Container datatypes", "rest"),  # roles stripped from the heading
        ("collections.Counter", "api-doc"),
        ("collections.Counter.most_common", "api-doc"),
        ("collections.Counter.total", "api-doc"),
        ("collections --- Container datatypes", "rest"),  # the dedented paragraph
        ("collections.namedtuple", "api-doc"),
        ("collections.str.split", "api-doc"),
    ]
    most_common = chunks[2]
    assert most_common.text.lstrip().startswith(".. method:: most_common([n])")
    assert (most_common.start_line, most_common.end_line) == (14, 17)
    # the embedder sees plain words led by the qualified signature, no markup
    assert most_common.text_for_embedding() == (
        "collections.Counter.most_common([n]) Return a list of the n most common elements and their "
        "counts, using nlargest for n."
    )
    assert "Counters support rich comparison" in chunks[4].text


def test_rest_plain_strips_roles_literals_and_emphasis() -> None:
    assert rest_plain("Use :func:`json.dumps` or :meth:`~dict.get` on ``x`` with *key* and **kw") == (
        "Use json.dumps or get on x with key and kw"
    )
    assert rest_plain(".. versionchanged:: 3.10\n   Added *key*.\n\n.. note::\n   Text") == "Added key. Text"


def test_text_packs_paragraphs_and_dispatch_by_suffix() -> None:
    text = "\n\n".join(f"paragraph {i} " + "word " * 30 for i in range(20))
    chunks = split_text("notes.txt", text, max_chars=400)
    assert len(chunks) > 3 and all(len(c.text) <= 400 for c in chunks)
    assert split_file("a.md", "# T\nx\n")[0].kind == "markdown"
    assert split_file("a.rst", "T\n=\n\nx\n")[0].kind == "rest"
    assert split_file("a.py", "def f():\n    pass\n")[0].symbol == "f"
    assert split_file("a.txt", "hello")[0].kind == "text"


def test_pydoc_module_docs_have_one_chunk_per_public_api() -> None:
    docs = module_docs("json")
    symbols = [c.symbol for c in docs.chunks]
    assert symbols[0] == "json" and docs.chunks[0].kind == "module-doc"
    assert {"json.dumps", "json.loads", "json.JSONDecoder", "json.JSONDecoder.decode"} <= set(symbols)
    dumps = docs.chunks[symbols.index("json.dumps")]
    assert dumps.text.startswith("json.dumps(obj, *, skipkeys=False")
    assert "Serialize" in dumps.text and dumps.source == "json" and dumps.kind == "api-doc"
    assert len(dumps.text_for_embedding()) < len(dumps.text)  # the embedder sees a summary
    assert module_docs("no_such_module_xyz").chunks == []
