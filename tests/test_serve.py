"""``ragcoder serve`` with the real OpenAI client (``langchain_openai.ChatOpenAI``), a real server
process holding a tiny random model (converted by the real ONNX builder), and the agent's client
that finds it on the user's socket and falls back in-process when it dies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from tests.engine_helpers import build_onnx_folder, make_tiny_onnx_source


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = make_tiny_onnx_source(tmp_path_factory.mktemp("serve") / "tiny")
    return build_onnx_folder(source, source.parent / "tiny-onnx")


def _short_dir() -> Path:
    """A runtime dir with a short path: unix socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))


def _start(model: Path, runtime: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    ragcoder = str(Path(sys.executable).with_name("ragcoder"))
    env = {**os.environ, "RAGCODER_RUNTIME_DIR": str(runtime)}
    proc = subprocess.Popen(
        [ragcoder, "serve", "--model", str(model), "--engine", "auto", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        raise AssertionError(f"serve did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, line.rsplit("http://", 1)[1].split()[0]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@pytest.fixture(scope="module")
def server(tiny_onnx: Path) -> Iterator[tuple[str, Path]]:
    runtime = _short_dir()
    proc, url = _start(tiny_onnx, runtime)
    yield f"http://{url}", runtime
    _stop(proc)


def _openai(url: str, **options: object) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key="unused", model="tiny", max_retries=0, **options)


def test_openai_client_invoke_returns_text_and_usage(server, tiny_onnx: Path) -> None:
    from ragcoder.chains.llm.ort_chat import load_ort_chat_model

    url, _ = server
    reply = _openai(url, max_tokens=12).invoke("Write a function that adds two numbers.")
    local = load_ort_chat_model(tiny_onnx, max_new_tokens=12).invoke(
        "Write a function that adds two numbers."
    )
    assert reply.content == local.content  # the same greedy answer as in-process
    assert reply.usage_metadata["output_tokens"] == 12 and reply.usage_metadata["input_tokens"] > 10
    assert reply.response_metadata["finish_reason"] == "length"


def test_openai_client_streams_pieces_that_add_up_and_end_with_usage(server) -> None:
    url, _ = server
    chat = _openai(url, max_tokens=12, stream_usage=True)
    chunks = list(chat.stream("hello there"))
    assert len([c for c in chunks if c.content]) > 2
    assert "".join(c.content for c in chunks) == chat.invoke("hello there").content
    assert sum((c.usage_metadata or {}).get("output_tokens", 0) for c in chunks) == 12


def test_stop_temperature_seed_and_n_pass_through(server) -> None:
    url, _ = server
    chat = _openai(url, max_tokens=16)
    full = chat.invoke("tell me").content
    assert chat.invoke("tell me", stop=[full[6:9]]).content == full[: full.index(full[6:9])]
    sampled = _openai(url, max_tokens=16, temperature=1.0, seed=5)
    assert sampled.invoke("tell me").content == sampled.invoke("tell me").content != full
    several = _openai(url, max_tokens=8, temperature=1.0, n=3).generate([[HumanMessage("tell me")]])
    assert len(several.generations[0]) == 3


def test_a_seeded_batch_through_the_url_samples_what_a_local_batch_samples(server, tiny_onnx: Path) -> None:
    # one request per row, seeded s + i, batched on the server or not: the rows of one local call
    from ragcoder.chains.llm.ort_chat import load_ort_chat_model
    from ragcoder.chains.llm.remote import load_remote_chat_model

    url, _ = server
    rows = [[HumanMessage("tell me")]] * 4
    served = load_remote_chat_model(url, max_new_tokens=12).bind(temperature=1.0, seed=9).batch(rows)
    local = load_ort_chat_model(tiny_onnx, max_new_tokens=12).batch(rows, temperature=1.0, seed=9)
    assert [m.content for m in served] == [m.content for m in local]
    assert len({m.content for m in served}) == 4  # four samples, not four copies of one


def test_concurrent_clients_are_answered_and_batched_together(server) -> None:
    import httpx

    url, _ = server
    prompts = [f"question number {i}: what is {i} plus {i}?" for i in range(6)]
    chat = _openai(url, max_tokens=24)
    alone = [chat.invoke(p).content for p in prompts]
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        answers[i] = _openai(url, max_tokens=24).invoke(prompts[i]).content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [answers[i] for i in range(6)] == alone
    health = httpx.get(url.removesuffix("/v1") + "/health").json()
    assert health["largest_batch"] > 1  # several clients' requests shared one generation


def test_a_second_serve_on_the_same_socket_refuses_clearly(server, tiny_onnx: Path) -> None:
    _, runtime = server
    ragcoder = str(Path(sys.executable).with_name("ragcoder"))
    env = {**os.environ, "RAGCODER_RUNTIME_DIR": str(runtime)}
    proc = subprocess.run(
        [ragcoder, "serve", "--model", str(tiny_onnx), "--engine", "auto"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"error: a ragcoder server already listens on {runtime / 'serve.sock'} (pid ")


def test_the_agent_finds_the_server_on_the_socket_and_uses_it(
    server, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragcoder.chains.llm.served import ServedChatModel, open_chat_model

    _, runtime = server
    monkeypatch.setenv("RAGCODER_RUNTIME_DIR", str(runtime))
    chat = open_chat_model(str(tiny_onnx), max_new_tokens=10)
    assert isinstance(chat, ServedChatModel) and chat.engine == "ort (served)"
    reply = chat.invoke("hi there", prompt_lookup=True)
    assert reply.usage_metadata["output_tokens"] == 10
    assert "".join(c.content for c in chat.stream("hi there")) == chat.invoke("hi there").content
    assert not isinstance(open_chat_model(str(tiny_onnx), server="off"), ServedChatModel)
    other = tiny_onnx.parent / "not-served"
    shutil.copytree(tiny_onnx, other)  # another model: loaded in this process
    assert not isinstance(open_chat_model(str(other)), ServedChatModel)


def test_a_server_that_dies_mid_request_falls_back_in_process_with_one_line(
    tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from ragcoder.chains.llm.ort_chat import load_ort_chat_model
    from ragcoder.chains.llm.served import ServedChatModel, open_chat_model

    runtime = _short_dir()
    proc, _ = _start(tiny_onnx, runtime)
    monkeypatch.setenv("RAGCODER_RUNTIME_DIR", str(runtime))
    chat = open_chat_model(str(tiny_onnx), max_new_tokens=3000)
    assert isinstance(chat, ServedChatModel)
    killer = threading.Timer(0.5, proc.kill)  # a long answer is being written when it dies
    killer.start()
    try:
        reply = chat.invoke("write a very long story", max_new_tokens=3000)
    finally:
        killer.cancel()
        _stop(proc)
    local = load_ort_chat_model(tiny_onnx, max_new_tokens=3000).invoke("write a very long story")
    assert reply.content == local.content
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert (
        len(lines) == 1
        and "stopped answering" in lines[0]
        and "loading the model in this process" in lines[0]
    )
    assert chat.engine == "in-process"
    time.sleep(0.1)


def test_ragcoder_solve_generates_through_a_running_server(server, tiny_onnx: Path) -> None:
    import httpx

    url, runtime = server
    health = url.removesuffix("/v1") + "/health"
    before = httpx.get(health).json()["requests"]
    ragcoder = str(Path(sys.executable).with_name("ragcoder"))
    env = {
        **os.environ,
        "RAGCODER_RUNTIME_DIR": str(runtime),
        "RAGCODER_MAX_NEW_TOKENS": "16",
        "RAGCODER_ENGINE": "auto",
        "RAGCODER_GENERATE_TESTS": "off",  # one candidate and no tests: one generation
    }
    proc = subprocess.run(
        [
            ragcoder,
            "solve",
            "Write one() returning 1.",
            "--samples",
            "1",
            "--model",
            str(tiny_onnx),
            "--sandbox",
            "local",
            "--no-retrieval",
            "--attempts",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode in (0, 2), proc.stderr  # 2: the tiny random model's code fails its check
    assert "attempt 1 (generate)" in proc.stdout
    assert httpx.get(health).json()["requests"] == before + 1  # its one generation went to the server


def test_a_stream_cut_by_a_dying_server_is_finished_in_process_without_repeating_itself(
    tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from ragcoder.chains.llm.ort_chat import load_ort_chat_model
    from ragcoder.chains.llm.served import ServedChatModel, open_chat_model

    runtime = _short_dir()
    proc, _ = _start(tiny_onnx, runtime)
    monkeypatch.setenv("RAGCODER_RUNTIME_DIR", str(runtime))
    chat = open_chat_model(str(tiny_onnx), max_new_tokens=400)
    assert isinstance(chat, ServedChatModel)
    pieces = []
    try:
        for chunk in chat.stream("tell me a long story"):
            pieces.append(chunk.content)
            if len(pieces) == 5:
                proc.kill()  # the server dies while the answer is streaming
    finally:
        _stop(proc)
    local = load_ort_chat_model(tiny_onnx, max_new_tokens=400).invoke("tell me a long story")
    assert "".join(pieces) == local.content
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "stopped answering" in lines[0]


def test_llm_url_to_ragcoder_serve_decodes_repairs_with_prompt_lookup_as_in_process(server) -> None:
    from ragcoder.chains.llm.remote import load_remote_chat_model

    url, _ = server
    chat = load_remote_chat_model(url, max_new_tokens=10)
    assert chat.ragcoder_server  # it lists its model as owned by ragcoder
    repair = chat.for_repairs()
    assert repair.kwargs == {"extra_body": {"prompt_lookup": True}}
    reply = repair.invoke("def f():\n    return 1\nfix f")  # the server takes the option
    assert reply.usage_metadata["output_tokens"] == 10
