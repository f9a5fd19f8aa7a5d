"""Cleaning up after a run: whatever tree a run leaves, the server empties it (no recursion, no
symlink followed, within a time budget) or asks to be replaced; it never dies, never hangs the
next request, and collecting the run's files never makes the answer fail."""

from __future__ import annotations

import time
from pathlib import Path

from .conftest import ServerProcess

NESTED = """
import os
os.chdir({top!r})
for i in range({depth}):
    os.mkdir({name!r})
    os.chdir({name!r})
open('leaf.txt', 'w').write('x')
print('made')
"""


def test_a_deep_tree_is_removed_and_collecting_it_does_not_fail(server: ServerProcess) -> None:
    answer = server.run(NESTED.format(top=str(server.work), depth=1500, name="d"))
    assert answer["ok"] and answer["stdout"] == "made\n", answer
    assert server.after == {"ok": True, "ready": True}
    assert list(server.work.iterdir()) == []
    assert server.run("print('next')")["stdout"] == "next\n"


def test_a_tree_deeper_than_path_max_with_locked_folders_is_removed(server: ServerProcess) -> None:
    code = (
        NESTED.format(top=str(server.work), depth=40, name="n" * 200)
        + "os.chmod('.', 0)\nos.chdir('..')\nos.chmod('.', 0o100)"
    )
    answer = server.run(code)
    assert answer["ok"], answer
    assert server.after == {"ok": True, "ready": True}
    assert list(server.work.iterdir()) == []


def test_a_symlink_out_of_the_work_folder_is_removed_not_followed(
    server: ServerProcess, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    code = f"import os\nos.symlink({str(outside)!r}, 'link')\nos.mkdir('d')\nos.symlink({str(outside)!r}, 'd/link2')"
    server.run(code)
    assert server.after == {"ok": True, "ready": True}
    assert (outside / "keep.txt").read_text() == "keep"
    assert list(server.work.iterdir()) == []


def test_many_hard_links_are_removed_within_the_budget(server: ServerProcess) -> None:
    code = "import os\nopen('f', 'w').close()\nfor i in range(50_000):\n    os.link('f', f'l{i}')"
    answer = server.run(code, timeout=30)
    assert answer["ok"] and not answer["timed_out"], answer
    assert server.after == {"ok": True, "ready": True}
    started = time.monotonic()
    assert server.run("print('fast')")["stdout"] == "fast\n"
    assert time.monotonic() - started < 2
    assert list(server.work.iterdir()) == []


def test_a_cleanup_over_budget_asks_to_be_replaced(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    server = ServerProcess(work, cleanup_budget_s=0.001)
    try:
        answer = server.run("import os\nfor i in range(5_000):\n    open(f'f{i}', 'w').close()", timeout=60)
        assert answer["ok"]  # the run itself is answered in full
        assert server.after["ok"] and "cleanup budget" in server.after["recycle"]
        server.proc.wait(timeout=10)  # and the server goes away: the host starts a fresh one
    finally:
        server.close()


def test_files_a_run_wrote_come_back_within_limits(server: ServerProcess) -> None:
    code = "import os\nos.makedirs('a/b')\nopen('a/b/out.txt', 'w').write('hi')\nopen('in.txt', 'w').write('changed')"
    answer = server.run(code, files={"in.txt": "YQ=="})
    assert answer["files"] == {"a/b/out.txt": "aGk=", "in.txt": "Y2hhbmdlZA=="}
    answer = server.run("for i in range(200):\n    open(f'f{i:03}', 'w').write('x')")
    assert len(answer["files"]) == 50  # max_files
