"""The model behind a URL: LangChain's real ``ChatOpenAI`` client against a real OpenAI-compatible
server on 127.0.0.1 (tests/scale/openai_server.py over our own chat model), then the agent
through ``llm_url`` from the config, the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from ragcoder.chains.llm.remote import (
    RemoteChatModel,
    load_remote_chat_model,
    normalise_llm_url,
    served_models,
)

from ragcoder.errors import ConfigError, ModelUnavailable
from tests.scale.conftest import free_port

MESSAGES = [SystemMessage(content="You write Python."), HumanMessage(content="Write a function add(a, b).")]


@pytest.fixture(scope="module")
def tiny_url(start_openai_server, model_tiny_dir: Path) -> str:
    return start_openai_server(str(model_tiny_dir), max_new_tokens=24, name="tiny")


def test_urls_get_v1_and_bad_ones_are_config_errors() -> None:
    assert normalise_llm_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalise_llm_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalise_llm_url("https://h/api/openai/v1") == "https://h/api/openai/v1"
    with pytest.raises(ConfigError, match="not an http"):
        normalise_llm_url("127.0.0.1:8000")


def test_invoke_matches_the_local_model_and_reports_usage(tiny_url: str, tiny_chat) -> None:
    chat = load_remote_chat_model(tiny_url, max_new_tokens=24)
    assert isinstance(chat, RemoteChatModel) and chat.model_name == "tiny"  # the server's only model
    reply = chat.invoke(MESSAGES)
    local = tiny_chat.invoke(MESSAGES, max_new_tokens=24)
    assert reply.content == local.content  # greedy on both sides: the same text
    assert reply.usage_metadata["input_tokens"] == local.usage_metadata["input_tokens"]
    assert reply.usage_metadata["output_tokens"] == local.usage_metadata["output_tokens"] > 0


def test_streaming_yields_pieces_that_add_up_to_invoke_and_ends_with_usage(tiny_url: str) -> None:
    chat = load_remote_chat_model(tiny_url, max_new_tokens=24)
    chunks = list(chat.stream(MESSAGES))
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 1  # really streamed, not one block
    assert "".join(texts) == chat.invoke(MESSAGES).content
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] > 0


def test_concurrent_requests_all_answer_and_agree(tiny_url: str) -> None:
    chat = load_remote_chat_model(tiny_url, max_new_tokens=24)
    prompts = [[HumanMessage(content=f"Write a function f{i}(x) that returns x + {i}.")] for i in range(6)]
    expected = [chat.invoke(p).content for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda p: chat.invoke(p).content, prompts))
    assert got == expected


def test_async_invoke_and_stream_work(tiny_url: str) -> None:
    import asyncio

    chat = load_remote_chat_model(tiny_url, max_new_tokens=24)

    async def run() -> tuple[str, str]:
        answer = await chat.ainvoke(MESSAGES)
        pieces = [chunk.content async for chunk in chat.astream(MESSAGES)]
        return str(answer.content), "".join(str(p) for p in pieces)

    answer, streamed = asyncio.run(run())
    assert answer == streamed == chat.invoke(MESSAGES).content


def test_sampling_options_reach_the_server(tiny_url: str) -> None:
    chat = load_remote_chat_model(tiny_url, max_new_tokens=24)
    sampled = chat.bind(temperature=1.5, seed=7)
    assert sampled.invoke(MESSAGES).content == sampled.invoke(MESSAGES).content  # seeded: reproducible
    assert {sampled.bind(seed=s).invoke(MESSAGES).content for s in range(4)} != {
        chat.invoke(MESSAGES).content
    }


def test_a_model_the_server_does_not_serve_fails_at_start(tiny_url: str) -> None:
    with pytest.raises(ModelUnavailable, match="does not serve 'qwen'; it serves tiny") as err:
        load_remote_chat_model(tiny_url, model="qwen")
    assert "\n" not in str(err.value)


def test_a_server_that_does_not_answer_is_one_line_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelUnavailable) as err:
        served_models(url)
    assert url in str(err.value) and "\n" not in str(err.value)


def test_a_server_that_dies_mid_run_is_one_line_error(start_openai_server, model_tiny_dir: Path) -> None:
    import signal

    url = start_openai_server(str(model_tiny_dir), max_new_tokens=8)
    chat = load_remote_chat_model(url, max_new_tokens=8, max_retries=0)
    chat.invoke(MESSAGES)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    pid = _listening_pid(port)
    import os

    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ModelUnavailable, match=r"model server at .* failed") as err:
        chat.invoke(MESSAGES)
    assert "\n" not in str(err.value)


def _listening_pid(port: int) -> int:
    """The pid of the process listening on ``port`` (from /proc: no psutil needed)."""
    import os
    import re

    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                match = re.match(r"socket:\[(\d+)\]", target)
                if match and match.group(1) in inodes:
                    return int(pid)
        except OSError:
            continue
    raise LookupError(f"nothing listens on {port}")


def test_llm_url_is_a_setting_from_flags_env_and_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragcoder.agent.config import resolve_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAGCODER_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "ragcoder.toml").write_text('llm_url = "http://toml:1/v1"\n')
    assert resolve_config().llm_url == "http://toml:1/v1"
    monkeypatch.setenv("RAGCODER_LLM_URL", "http://env:2/v1")
    assert resolve_config().sources["llm_url"] == "RAGCODER_LLM_URL"
    config = resolve_config({"llm_url": "http://flag:3"})
    assert (config.llm_url, config.sources["llm_url"]) == ("http://flag:3", "flag")
    with pytest.raises(ConfigError, match="llm_url = 'flag:3' from flag is not an http"):
        resolve_config({"llm_url": "flag:3"})


def test_the_agent_runs_on_the_served_model(tiny_url: str) -> None:
    """build_agent with llm_url: the model is the server's (the bubblewrap sandbox: the tiny
    model writes no code worth running, but every attempt goes through the loop)."""
    from ragcoder.agent.config import AgentConfig, build_agent

    config = AgentConfig(
        llm_url=tiny_url, sandbox="local", retrieval="never", max_attempts=2, max_new_tokens=24
    )
    with build_agent(config) as agent:
        assert isinstance(agent.model, RemoteChatModel) and agent.model.max_tokens == 24
        result = agent.invoke("Write a function add(a, b) that returns a + b.")
    assert len(result.attempts) in (1, 2)
    assert all(a.output_tokens > 0 for a in result.attempts)  # usage came back through the client


# -- a real small model through the URL (SmolLM2-135M) --------------------------------------------


@pytest.fixture(scope="module")
def smol_installed() -> str:
    from ragcoder.chains.llm.convert import install_model
    from ragcoder.chains.llm.models import read_manifest

    name = "smollm2-135m-instruct"
    if read_manifest(name) is None:
        install_model(name)
    return name


@pytest.mark.slow
def test_agent_solves_a_trivial_task_through_the_url(
    start_openai_server, smol_installed: str, tmp_path: Path
) -> None:
    """SmolLM2-135M served over HTTP; `ragcoder solve --llm-url` solves and checks add(a, b) in the
    sandbox (the local bubblewrap one, or Docker when the CLI's auto picks it)."""
    url = start_openai_server(smol_installed, max_new_tokens=200)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragcoder.cli.app",
            "solve",
            "--llm-url",
            url,
            "--no-retrieval",
            "--json",
            "--attempts",
            "3",
            "--tests",
            "assert add(2, 3) == 5\nassert add(-1, 1) == 0",
            "Write a Python function add(a, b) that returns the sum of a and b.",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    result = json.loads(done.stdout)
    assert result["passed"] and "def add" in result["code"]


def test_another_server_gets_no_ragcoder_options(tiny_url: str) -> None:
    chat = load_remote_chat_model(tiny_url, max_new_tokens=24)
    assert not chat.ragcoder_server and chat.for_repairs() is chat
