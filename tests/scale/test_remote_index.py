"""The index behind a URL: indexing and retrieval against a real ``chroma run`` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from ragcoder.chains.retrieval import remote_index
from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
from ragcoder.chains.retrieval.indexing import index_paths
from ragcoder.chains.retrieval.retriever import open_retriever

from ragcoder.errors import ConfigError, IndexUnavailable
from tests.scale.conftest import ChromaServer

FILES = {
    "pkg/geometry.py": 'import math\n\n\ndef circle_area(radius):\n    """Area of a circle."""\n'
    "    return math.pi * radius**2\n",
    "pkg/text_tools.py": 'def slugify(title):\n    """Turn a title into a url slug with dashes."""\n'
    "    return '-'.join(title.lower().split())\n",
    "docs/guide.md": "# Guide\n\n## Databases\n\nConnect to sqlite with a connection string.\n",
}


def write_corpus(root: Path, files: dict[str, str] = FILES) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def symbols(docs: list) -> list[str]:
    return [d.metadata.get("symbol") for d in docs]


def test_index_urls_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragcoder.agent.config import resolve_config

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="index_url = 'localhost:8000' from flag is not an http"):
        resolve_config({"index_url": "localhost:8000"})
    assert resolve_config({"index_url": "http://h:9/"}).index_url == "http://h:9"
    with pytest.raises(ConfigError, match="invalid port"):
        remote_index.parse_index_url("http://h:port")


def test_index_and_search_through_the_server(chroma_server: ChromaServer, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    path = remote_index.remote_index_path(chroma_server.url)
    embeddings = HashingEmbeddings(64)
    stats = index_paths([corpus], index_path=path, embeddings=embeddings, progress=False)
    assert stats.units_indexed == 3 and stats.chunks_added >= 3
    assert (chroma_server.path / "chroma.sqlite3").is_file()  # the chunks are in the server's folder
    assert not (path / "chroma.sqlite3").exists()  # not in the stand-in
    retriever = open_retriever(path, k=2, embeddings=embeddings)
    assert symbols(retriever.invoke("slugify a title into a url slug"))[0] == "slugify"

    # incremental: nothing changed, then one file changed, then one removed
    again = index_paths([corpus], index_path=path, embeddings=embeddings, progress=False)
    assert (again.units_indexed, again.units_unchanged) == (0, 3)
    (corpus / "pkg/text_tools.py").write_text('def kebab_case(title):\n    """Dashes between words."""\n')
    (corpus / "docs/guide.md").unlink()
    changed = index_paths([corpus], index_path=path, embeddings=embeddings, progress=False)
    assert (changed.units_indexed, changed.units_unchanged, changed.units_removed) == (1, 1, 1)
    found = symbols(retriever.invoke("kebab case words with dashes"))
    assert "kebab_case" in found and "slugify" not in found  # the retriever saw the new generation


CLIENT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from ragcoder.chains.retrieval import remote_index
    from ragcoder.chains.retrieval.embeddings import HashingEmbeddings
    from ragcoder.chains.retrieval.indexing import index_paths
    from ragcoder.chains.retrieval.retriever import open_retriever

    url, corpus, query, wanted = sys.argv[1:5]
    path = remote_index.remote_index_path(url)
    embeddings = HashingEmbeddings(64)
    stats = index_paths([Path(corpus)], index_path=path, embeddings=embeddings, progress=False)
    retriever = open_retriever(path, k=8, embeddings=embeddings)
    deadline = time.monotonic() + 60
    while True:  # the other client's chunks show up once it has written them
        found = [d.metadata.get("symbol") for d in retriever.invoke(query)]
        if wanted in found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(json.dumps({"indexed": stats.units_indexed, "found": found}))
    """
)


def test_two_clients_at_once_share_the_index(chroma_server: ChromaServer, tmp_path: Path) -> None:
    """Two processes index different folders at the same time; each then finds the other's code."""
    one = write_corpus(
        tmp_path / "one", {"a/area.py": "def circle_area(radius):\n    return 3.14 * radius\n"}
    )
    two = write_corpus(tmp_path / "two", {"b/slug.py": "def slugify(title):\n    return title.lower()\n"})
    env = {**os.environ, "RAGCODER_DATA_DIR": str(tmp_path / "data")}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, chroma_server.url, str(one), "slugify title", "slugify"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ),
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, chroma_server.url, str(two), "circle area radius", "circle_area"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        ),
    ]
    outputs = [run.communicate(timeout=180) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-1500:] for _, err in outputs]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert first["indexed"] == second["indexed"] == 1
    assert "slugify" in first["found"] and "circle_area" in second["found"]


def test_a_server_restart_mid_run_is_waited_out(chroma_server: ChromaServer, tmp_path: Path) -> None:
    """Searches keep going in a thread while the server stops and starts again: none fails."""
    corpus = write_corpus(tmp_path / "corpus")
    path = remote_index.remote_index_path(chroma_server.url)
    embeddings = HashingEmbeddings(64)
    index_paths([corpus], index_path=path, embeddings=embeddings, progress=False)
    retriever = open_retriever(path, k=2, embeddings=embeddings)
    results: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            try:
                results.append(symbols(retriever.invoke("slugify a title"))[0])
            except BaseException as exc:
                errors.append(exc)
            time.sleep(0.05)

    thread = threading.Thread(target=search)
    thread.start()
    time.sleep(0.5)
    before = len(results)
    chroma_server.stop()
    time.sleep(1.0)
    chroma_server.start()
    time.sleep(1.0)
    stop.set()
    thread.join(30)
    assert not errors, errors[:1]
    assert before > 0 and len(results) > before and set(results) == {"slugify"}
    # a write after the restart lands too (incremental: one changed file)
    (corpus / "pkg/geometry.py").write_text("def sphere_volume(radius):\n    return 4 / 3 * radius**3\n")
    assert index_paths([corpus], index_path=path, embeddings=embeddings, progress=False).units_indexed == 1


def test_a_server_down_too_long_is_one_line_error_then_works_again(
    chroma_server: ChromaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    path = remote_index.remote_index_path(chroma_server.url)
    embeddings = HashingEmbeddings(64)
    index_paths([corpus], index_path=path, embeddings=embeddings, progress=False)
    retriever = open_retriever(path, k=2, embeddings=embeddings)
    monkeypatch.setattr(remote_index, "RECONNECT_WINDOW_S", 1.0)
    chroma_server.stop()
    with pytest.raises(IndexUnavailable) as err:
        retriever.invoke("slugify a title")
    assert chroma_server.url.split("//")[1] in str(err.value) and "\n" not in str(err.value)
    chroma_server.start()
    assert symbols(retriever.invoke("slugify a title"))[0] == "slugify"


def test_the_cli_reports_a_missing_server_in_one_line(tmp_path: Path) -> None:
    from tests.scale.conftest import free_port

    env = {**os.environ, "RAGCODER_DATA_DIR": str(tmp_path / "data")}
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "ragcoder.cli.app", "search", "--index-url", url, "anything"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: the Chroma server at") and "does not answer" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_index_search_and_the_agent_work_against_the_server(
    chroma_server: ChromaServer, tmp_path: Path, model_tiny_dir: Path
) -> None:
    """`ragcoder index` and `search` with the real embedder over --index-url / RAGCODER_INDEX_URL,
    then an agent built with index_url puts the served chunks in its prompt."""
    corpus = write_corpus(tmp_path / "corpus")
    env = {**os.environ, "RAGCODER_DATA_DIR": str(tmp_path / "data")}
    cli = [sys.executable, "-m", "ragcoder.cli.app"]
    done = subprocess.run(
        [*cli, "index", "--quiet", "--index-url", chroma_server.url, str(corpus)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 indexed" in done.stdout
    found = subprocess.run(
        [*cli, "search", "--json", "-k", "1", "turn a title into a url slug"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "RAGCODER_INDEX_URL": chroma_server.url},
    )
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout.splitlines()[0])["symbol"] == "slugify"

    from ragcoder.agent.config import AgentConfig, build_agent
    from ragcoder.chains.llm.chat_model import clear_model_cache

    os.environ["RAGCODER_DATA_DIR"] = env["RAGCODER_DATA_DIR"]  # chroma_server's monkeypatch set it too
    config = AgentConfig(
        model=str(model_tiny_dir),
        index_url=chroma_server.url,
        retrieval="always",
        sandbox="local",
        max_attempts=1,
        max_new_tokens=16,
    )
    try:
        with build_agent(config, quantize="none") as agent:
            result = agent.invoke("Write slugify(title): turn a title into a url slug with dashes.")
    finally:
        clear_model_cache()
    assert any("slugify" in source for source in result.sources), result.sources
