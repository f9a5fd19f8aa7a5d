"""Hostile files in a folder being indexed (real Chroma, hashing embeddings): each bad file is
skipped with a warning naming it, the rest is indexed, and no failure leaves the index half written."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ragcoder.chains.retrieval import indexing
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.indexing import (
    Unit,
    get_client,
    index_generation,
    index_paths,
    open_collection,
    sync_units,
)
from ragcoder.chains.retrieval.splitters import MAX_LINE_CHARS, split_file, text_problem

from ragcoder.cli.app import cli

GOOD = {
    "good.py": "def area(r):\n    '''Area of a circle.'''\n    return 3.14 * r * r\n",
    "notes.md": "# Notes\n\nRetry failed downloads three times.\n",
    "caf\u00e9.txt": "A name that is valid UTF-8 is indexed as it is.\n",
}


def _sources(index_path: Path) -> dict[str, int]:
    collection = open_collection(index_path, None, create=False)
    assert collection is not None
    counts: dict[str, int] = {}
    for meta in collection.get(include=["metadatas"])["metadatas"] or []:
        counts[str(meta["source"])] = counts.get(str(meta["source"]), 0) + 1
    return counts


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name, text in GOOD.items():
        (root / name).write_text(text)
    return root


def _index(root: Path, tmp_path: Path, **kwargs: Any) -> indexing.IndexStats:
    return index_paths(
        [root], index_path=tmp_path / "index", embeddings=HashingEmbeddings(64), progress=False, **kwargs
    )


def _assert_only_good_indexed(root: Path, tmp_path: Path) -> None:
    assert set(_sources(tmp_path / "index")) == {str(root / name) for name in GOOD}


def test_a_file_name_that_is_not_utf8_is_skipped_and_named(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = os.fsencode(folder) + b"/zz-bad\xff.py"  # sorts last: the writes before it must stand
    with open(bad, "w") as handle:
        handle.write("def bad():\n    return 2\n")
    monkeypatch.setattr(indexing, "EMBED_BATCH_CHUNKS", 1)  # one write per file: a late failure would show
    with caplog.at_level(logging.WARNING):
        stats = _index(folder, tmp_path)
    assert stats.skipped == [f"{folder}/zz-bad\\xff.py: its name is not valid UTF-8 (rename it to index it)"]
    assert f"skipping {folder}/zz-bad\\xff.py" in caplog.text
    assert stats.units_indexed == len(GOOD) and "1 skipped" in stats.summary()
    _assert_only_good_indexed(folder, tmp_path)


def test_a_minified_200k_character_line_is_skipped_not_a_memory_error(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = "x = " + "-" * 200_000 + "1\n"  # Python's parser raises MemoryError on this one
    (folder / "generated.py").write_text("import os\n" + line)
    with caplog.at_level(logging.WARNING):
        stats = _index(folder, tmp_path)
    assert stats.skipped == [
        f"{folder}/generated.py: line 2 has 200,005 characters (minified or generated?); the limit is 10,000"
    ]
    assert "generated.py" in caplog.text
    _assert_only_good_indexed(folder, tmp_path)


def test_the_splitter_itself_survives_the_parser_running_out_of_memory() -> None:
    text = "x = " + "-" * 200_000 + "1\n"
    assert text_problem(text.encode()) is not None  # the indexer never hands it over; if it did:
    chunks = split_file("generated.py", text)
    assert chunks and all(c.kind == "code" for c in chunks)
    assert text_problem(("y = 1  # " + "z" * (MAX_LINE_CHARS - 20) + "\n").encode()) is None


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("image.md", None, "binary data ("),  # 400 KB of random bytes without one NUL
        ("archive.txt", b"PK\x03\x04\x14\x00" + bytes(range(256)) * 40, "binary data (NUL bytes)"),
        ("utf16.py", "print('hi')\n".encode("utf-16"), "binary data (NUL bytes)"),
    ],
)
def test_binary_files_posing_as_text_are_skipped(
    name: str, data: bytes | None, why: str, folder: Path, tmp_path: Path
) -> None:
    if data is None:
        data = os.urandom(400_000).replace(b"\0", b"\x01")
    (folder / name).write_bytes(data)
    stats = _index(folder, tmp_path)
    assert len(stats.skipped) == 1 and stats.skipped[0].startswith(f"{folder}/{name}: {why}")
    _assert_only_good_indexed(folder, tmp_path)


def test_text_in_other_encodings_and_scripts_is_still_indexed(folder: Path, tmp_path: Path) -> None:
    latin1 = "Les fichiers sont lus \u00e0 la vol\u00e9e, d\u00e9cod\u00e9s et index\u00e9s.\n" * 50
    (folder / "latin1.txt").write_bytes(latin1.encode("latin-1"))
    (folder / "chinese.md").write_text(
        "# \u8bfb\u53d6\u6587\u4ef6\n\n\u7528 csv \u6a21\u5757\u8bfb\u53d6\u6587\u4ef6\u3002\n"
    )
    stats = _index(folder, tmp_path)
    assert stats.skipped == [] and stats.units_indexed == len(GOOD) + 2


def test_a_unit_that_cannot_be_split_is_skipped_and_the_rest_written(tmp_path: Path) -> None:
    def explode() -> list:
        raise MemoryError

    good = Unit("mod-good", "h1", lambda: split_file("a.py", GOOD["good.py"]))
    stats = sync_units(
        [Unit("mod-bad", "h2", explode), good],
        corpus="stdlib",
        in_scope=lambda s: True,
        index_path=tmp_path / "index",
        embeddings=HashingEmbeddings(64),
        progress=False,
    )
    assert stats.skipped == ["mod-bad: cannot split it (MemoryError: )"]
    assert set(_sources(tmp_path / "index")) == {"a.py"}


def test_a_write_that_fails_midway_loses_nothing_and_a_rerun_finishes_it(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chroma refuses the last file's chunks (a lone surrogate, as an undecodable name used to
    bring): the files before it are updated, that file keeps its old chunks, BM25 is told."""
    index = tmp_path / "index"
    _index(folder, tmp_path)
    before = index_generation(index)
    for name in GOOD:
        (folder / name).write_text((folder / name).read_text() + "\n\nMore text, so the file changed.\n")
    real_metadata = indexing._chunk_metadata

    def poisoned(chunk: Any, unit: Unit, corpus: str) -> dict[str, Any]:
        metadata = real_metadata(chunk, unit, corpus)
        return {**metadata, "symbol": "bad\udcff"} if unit.source.endswith("notes.md") else metadata

    monkeypatch.setattr(indexing, "_chunk_metadata", poisoned)
    monkeypatch.setattr(indexing, "EMBED_BATCH_CHUNKS", 1)  # one write per file; notes.md is last
    with pytest.raises(Exception, match=r"metadata|surrogates"):
        _index(folder, tmp_path)
    assert index_generation(index) != before  # the retriever's BM25 sees what was written
    assert set(_sources(index)) == {str(folder / name) for name in GOOD}  # no file lost its chunks
    monkeypatch.setattr(indexing, "_chunk_metadata", real_metadata)
    assert _index(folder, tmp_path).units_indexed == 1  # only notes.md was left to do
    fresh = index_paths(
        [folder], index_path=tmp_path / "fresh", embeddings=HashingEmbeddings(64), progress=False
    )
    assert _sources(index) == _sources(tmp_path / "fresh") and fresh.units_indexed == len(GOOD)


def test_the_index_command_warns_skips_and_goes_on(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ragcoder.cli.commands import index_cmd

    monkeypatch.setattr(index_cmd, "load_embeddings", lambda path=None: HashingEmbeddings(64))
    (folder / "blob.md").write_bytes(os.urandom(50_000).replace(b"\0", b"\x01"))
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(
            cli, ["index", str(folder), "--index-path", str(tmp_path / "index"), "--quiet"]
        )
    assert result.exit_code == 0, result.output
    assert f"{len(GOOD)} indexed" in result.output and "1 skipped" in result.output
    assert f"skipping {folder}/blob.md: binary data" in caplog.text
    _assert_only_good_indexed(folder, tmp_path)
    get_client(tmp_path / "index")  # the index opens


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_search_refuses_an_empty_query_before_opening_anything(
    query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_open(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the index was opened for an empty query")

    monkeypatch.setattr(indexing, "open_collection", must_not_open)
    result = CliRunner().invoke(cli, ["search", query])
    assert (result.exit_code == 1 and result.exception is None) or isinstance(result.exception, SystemExit)
    assert result.output.splitlines() == [
        "Error: the query is empty: say what to look for, e.g. ragcoder search 'read a csv file'"
    ]
