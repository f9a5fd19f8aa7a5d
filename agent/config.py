"""The agent's settings, where each value comes from, and building an agent from them.

Precedence, highest first: CLI flags > environment (``RAGCODER_<KEY>``) > the project's
``./ragcoder.toml`` > the user's ``~/.config/ragcoder/ragcoder.toml`` > defaults. The TOML files
hold the same keys at the top level (or under ``[ragcoder]``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcoder.agent.config_rules import RULES, coerce_setting
from ragcoder.agent.defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_SAMPLES, DEFAULT_STUCK_TEMPERATURE
from ragcoder.agent.scale_settings import SCALE_SETTINGS
from ragcoder.agent.tasks import MAX_INSTRUCTION_CHARS

from ragcoder.errors import ConfigError

if TYPE_CHECKING:
    from langchain_core.retrievers import BaseRetriever
    from ragcoder.agent.loop import CodeAgent

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
MAX_CONFIG_BYTES = 1 << 20  # a settings file is a few hundred bytes; more is the wrong file


@dataclass
class AgentConfig:
    model: str = DEFAULT_MODEL  # known name, HF folder, .gguf file or cached HF id
    adapter: str | None = None  # LoRA adapter folder made by `ragcoder finetune`
    # torch: ONNX Runtime int4 passed fewer dev tasks than the engine rule allows (docs/results.md);
    # auto: ONNX Runtime int4 when the model has that form (`models install --onnx`), else torch
    engine: str = "torch"  # torch | auto | ort (chains/llm/engines.py)
    server: str | None = None  # a `ragcoder serve` URL; none: the one on the user's socket if any; off
    sandbox: str = "auto"  # auto | docker | local | unsafe-local
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # auto: the user's own indexed code for every task but a self-contained function stub, the
    # stdlib's docs only for tasks that name an API or module: elsewhere they measured as a
    # distraction (chains/retrieval/gate.py); always | never (true | false)
    retrieval: str = "auto"
    # the model names the APIs a request needs before the index is searched (chains/retrieval/api_guess.py):
    # finds docs worded unlike the request, for one short generation more per retrieval
    retrieval_guess: bool = False
    index_path: str | None = None  # default: the user's data dir
    k: int = 4  # documents put in the prompt
    timeout: float | None = None  # seconds per run; None: the sandbox's default
    max_new_tokens: int = 768  # enough for a 60-line function with its demo block
    # repairs are sampled (seeded) at this temperature (ragcoder.agent.defaults); none: the
    # candidates' temperature (0.8)
    stuck_temperature: float | None = DEFAULT_STUCK_TEMPERATURE
    samples: int = DEFAULT_SAMPLES  # candidates per round, run against tests to choose one (docs/results.md)
    generate_tests: bool = True  # with no tests from the user, the model writes some to rank candidates
    # sample candidates even when the greedy one passes the user's tests or the examples (docs/results.md)
    always_sample: bool = False
    # a first candidate that passes the examples meets the model's tests too (docs/results.md)
    confirm_examples: bool = False
    max_instruction_chars: int = MAX_INSTRUCTION_CHARS  # longer instructions are refused (tasks.py: why 16k)
    # the image runs go to: auto (the standard one, or the scientific one when the code imports its
    # packages and it is built), standard, scientific, or an image tag
    sandbox_image: str = "auto"
    # extra PyPI packages for the sandbox: an image derived once, cached by a hash of this list
    sandbox_packages: list[str] = field(default_factory=list)
    # past one machine (agent/scale_settings.py, docs/scale.md); unset: the embedded defaults
    llm_url: str | None = None  # an OpenAI-compatible server: ragcoder serve, vLLM, llama.cpp, Ollama
    index_url: str | None = None  # a Chroma server: `chroma run --path DIR --port P`
    docker_hosts: tuple[str, ...] = ()  # Docker engines for the sandboxes: unix://, tcp://, ssh://
    ray: str | None = None  # batch and eval fan out on Ray: local, auto or a cluster address
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def user_config_path() -> Path:
    env = os.environ.get("RAGCODER_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("ragcoder")) / "ragcoder.toml"


def project_config_path() -> Path:
    return Path.cwd() / "ragcoder.toml"


_FILE_HINT = "fix or remove that file (RAGCODER_CONFIG names the user file)"


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    """The settings in one TOML file (none when it does not exist); ``label`` says where its name
    came from, for the error."""
    try:
        return _parse_toml(path, label)
    except ConfigError as exc:
        raise ConfigError(str(exc), hint=_FILE_HINT) from None


def _parse_toml(path: Path, label: str) -> dict[str, Any]:
    if not path.exists():
        return {}
    if not path.is_file():
        raise ConfigError(f"{label} {path} is not a regular file: point it at a ragcoder.toml")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {label} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{label} {path} is over {MAX_CONFIG_BYTES >> 20} MiB: not a settings file")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label} {path} is not valid TOML: {exc}") from None
    if "ragcoder" in data:
        data = data["ragcoder"]
        if not isinstance(data, dict):
            raise ConfigError(
                f"ragcoder = {data!r} in {path}: [ragcoder] must be a table of settings (key = value lines)"
            )
    known = set(RULES) | set(SCALE_SETTINGS)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def resolve_config(flags: dict[str, Any] | None = None) -> AgentConfig:
    """Merge defaults < user file < project file < environment < flags (None flags are unset)."""
    config = AgentConfig()
    names = [f.name for f in fields(AgentConfig) if f.name != "sources"]
    config.sources = dict.fromkeys(names, "default")
    user_label = "RAGCODER_CONFIG" if os.environ.get("RAGCODER_CONFIG") else "user config"
    layers: list[tuple[str, dict[str, Any]]] = [
        (str(user_config_path()), _read_toml(user_config_path(), user_label)),
        (str(project_config_path()), _read_toml(project_config_path(), "project config")),
        (
            "env",
            {n: os.environ[f"RAGCODER_{n.upper()}"] for n in names if f"RAGCODER_{n.upper()}" in os.environ},
        ),
        ("flag", {k: v for k, v in (flags or {}).items() if v is not None and k in names}),
    ]
    for source, values in layers:
        for name, raw in values.items():
            label = f"RAGCODER_{name.upper()}" if source == "env" else source
            setattr(config, name, coerce_setting(name, raw, label))
            config.sources[name] = label
    return config


def check_config(config: AgentConfig) -> AgentConfig:
    """Apply the rules to a config built in code (``resolve_config`` applies them as it reads)."""
    for name in [*RULES, *SCALE_SETTINGS]:
        setattr(
            config, name, coerce_setting(name, getattr(config, name), config.sources.get(name, "AgentConfig"))
        )
    return config


def build_agent(
    config: AgentConfig,
    *,
    workers: int = 1,
    quantize: str = "auto",
    models: Callable[[Any], tuple[Any, Any]] | None = None,
    retriever: BaseRetriever | None = None,
) -> CodeAgent:
    """Open the sandbox first (fails fast), then the retriever and the model (slow).

    ``retriever`` replaces the index at ``config.index_path`` with one of your own, e.g. your
    LangChain vector store's ``store.as_retriever()``; ``config.retrieval`` still decides when it
    is asked ("never": not at all), and ``retrieval_guess`` applies to ragcoder's index only.

    With ``workers > 1`` (batch runs) the sandbox keeps that many warm servers and the model is
    wrapped so that concurrent generations share one batched call. ``models(chat)`` may replace
    the (generate, repair) pair built from the loaded chat model (evaluation samples with it).
    """
    check_config(config)  # before anything opens or loads
    from ragcoder.agent.loop import CodeAgent
    from ragcoder.chains.llm.chat_model import repair_model
    from ragcoder.chains.llm.served import open_chat_model
    from ragcoder.chains.retrieval.gate import decide_retrieval
    from ragcoder.sandbox.routing import ImageRouter

    pool = {"pool_size": workers} if workers > 1 else {}
    sandbox = ImageRouter(
        config.sandbox,
        image=config.sandbox_image,
        packages=config.sandbox_packages,
        hosts=config.docker_hosts,
        **pool,
    )
    try:
        own_index = retriever is None and config.retrieval != "never"
        if config.retrieval == "never":
            retriever = None
        elif own_index:
            from ragcoder.chains.retrieval.retriever import open_retriever

            retriever = open_retriever(index_location(config), k=config.k)
        if config.llm_url:  # the server decodes and batches: no lookup binding, no micro-batching
            from ragcoder.chains.llm.remote import load_remote_chat_model

            chat: Any = load_remote_chat_model(
                config.llm_url, model=_served_model_name(config), max_new_tokens=config.max_new_tokens
            )
        else:
            chat = open_chat_model(
                config.model,
                engine=config.engine,
                adapter=config.adapter,
                server=config.server,
                quantize=quantize,
                max_new_tokens=config.max_new_tokens,
            )
        if own_index and config.retrieval_guess:
            from ragcoder.chains.retrieval.api_guess import (
                GUESS_MAX_NEW_TOKENS,
                api_guess_chain,
                load_api_guesser,
            )

            retriever.api_guesser = (
                api_guess_chain(chat.bind(max_tokens=GUESS_MAX_NEW_TOKENS))
                if config.llm_url
                else load_api_guesser(config.model, adapter=config.adapter, quantize=quantize)
            )
        if models is not None:
            model, repair = models(chat)
        elif config.llm_url:  # ragcoder serve decodes repairs as in-process (prompt lookup)
            model, repair = chat, chat.for_repairs()
        else:  # prompt-lookup decoding for repairs: a repair copies the code it was shown
            model, repair = chat, repair_model(chat)
            if workers > 1:
                from ragcoder.agent.microbatch import MicroBatchingChatModel

                model = MicroBatchingChatModel(inner=model, max_batch=workers)
                repair = MicroBatchingChatModel(inner=repair, max_batch=workers)
    except BaseException:
        sandbox.close()
        raise
    return CodeAgent(
        model,
        sandbox,
        retriever=retriever,
        repair_model=repair,
        max_attempts=config.max_attempts,
        timeout=config.timeout,
        stuck_temperature=config.stuck_temperature,
        samples=config.samples,
        generate_tests=config.generate_tests,
        always_sample=config.always_sample,
        confirm_examples=config.confirm_examples,
        retrieval_gate=decide_retrieval if config.retrieval == "auto" else None,
    )


def index_location(config: AgentConfig) -> str | None:
    """The index folder to open: ``index_path``, or the stand-in folder of the server at ``index_url``."""
    if config.index_url:
        from ragcoder.chains.retrieval.remote_index import remote_index_path

        return str(remote_index_path(config.index_url))
    return config.index_path


def _served_model_name(config: AgentConfig) -> str | None:
    """``--model`` names the model on the server; left at its default, the server's first model is used."""
    unset = config.model == DEFAULT_MODEL and config.sources.get("model", "default") == "default"
    return None if unset else config.model
