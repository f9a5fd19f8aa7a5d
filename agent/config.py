"""The agent's settings, where each value comes from, and building an agent from them.

Precedence, highest first: CLI flags > environment (``RAGCODER_<KEY>``) > the project's
``./ragcoder.toml`` > the user's ``~/.config/ragcoder/ragcoder.toml`` > defaults. The TOML files
hold the same keys at the top level (or under ``[ragcoder]``).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcoder.agent.defaults import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_SAMPLES,
    DEFAULT_STUCK_TEMPERATURE,
    MAX_SAMPLES,
    MAX_STUCK_TEMPERATURE,
)
from ragcoder.agent.scale_settings import SCALE_SETTINGS, coerce_scale_setting
from ragcoder.agent.tasks import MAX_INSTRUCTION_CHARS
from ragcoder.chains.llm.engines import ENGINES

from ragcoder.errors import ConfigError

if TYPE_CHECKING:
    from langchain_core.retrievers import BaseRetriever
    from ragcoder.agent.loop import CodeAgent

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
SANDBOX_KINDS = ("auto", "docker", "local", "unsafe-local")
RETRIEVAL_MODES = ("auto", "always", "never")
_RETRIEVAL_WORDS = {
    "true": "always",
    "yes": "always",
    "on": "always",
    "1": "always",
    "false": "never",
    "no": "never",
    "off": "never",
    "0": "never",
}
_BOOL_WORDS = {word: mode == "always" for word, mode in _RETRIEVAL_WORDS.items()}
# a hung or sleeping program should cost minutes, not hours: no unit check needs longer per run
MAX_TIMEOUT_S = 600.0
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


@dataclass(frozen=True)
class _Rule:
    """What one setting accepts: its type, the range of a number, the words of a choice."""

    kind: type  # int, float, bool, str, or list (of package specs)
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low end itself is refused (a temperature of 0 is greedy: say none)
    choices: tuple[str, ...] = ()
    none: str = ""  # what none means, for settings that may be unset ("" : it may not)

    def allowed(self) -> str:
        if self.choices:
            text = f"choose one of {', '.join(self.choices)}"
        elif self.kind is bool:
            text = "use true or false"
        elif self.kind is str:
            text = "use a non-empty string"
        elif self.kind is list:
            text = "use a list of package specs such as requests or requests==2.32.3"
        else:
            number = "an integer" if self.kind is int else "a number"
            low = f"{self.low:g}" if self.low is not None else "-inf"
            if self.low_open:
                text = f"use {number} above {low} and at most {self.high:g}"
            else:
                text = f"use {number} from {low} to {self.high:g}"
        return f"{text}, or none ({self.none})" if self.none else text


# Every setting's allowed values, checked when the config is resolved: before any model loads.
RULES: dict[str, _Rule] = {
    "model": _Rule(str),
    "adapter": _Rule(str, none="no adapter"),
    "engine": _Rule(str, choices=ENGINES),
    "server": _Rule(str, none="the server on the user's socket, if one runs"),
    "sandbox": _Rule(str, choices=SANDBOX_KINDS),
    "max_attempts": _Rule(int, 1, 20),  # the --attempts bound; each attempt is a generation on CPU
    "retrieval": _Rule(str, choices=RETRIEVAL_MODES),
    "retrieval_guess": _Rule(bool),
    "index_path": _Rule(str, none="the user's data dir"),
    "k": _Rule(int, 1, 20),  # 20 chunks of ~1.5k characters already fill a quarter of the context
    "timeout": _Rule(float, 0, MAX_TIMEOUT_S, low_open=True, none="the sandbox's default"),
    "max_new_tokens": _Rule(int, 16, 8192),  # under 16 no function fits; 8k is a quarter of the context
    # the same range CodeAgent checks (defaults.check_stuck_temperature): 0 is greedy, say none
    "stuck_temperature": _Rule(
        float, 0, MAX_STUCK_TEMPERATURE, low_open=True, none="repairs at the candidates' temperature"
    ),
    "samples": _Rule(int, 1, MAX_SAMPLES),  # the --samples bound: each candidate is a generation and a run
    "generate_tests": _Rule(bool),
    "always_sample": _Rule(bool),
    "max_instruction_chars": _Rule(int, 1, 100_000),  # 100k characters ~ the whole 32k-token context
    "sandbox_image": _Rule(str),  # auto, standard, scientific or an image tag (checked when opened)
    "sandbox_packages": _Rule(list),  # pip specs such as requests==2.32.3
}


def user_config_path() -> Path:
    env = os.environ.get("RAGCODER_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("ragcoder")) / "ragcoder.toml"


def project_config_path() -> Path:
    return Path.cwd() / "ragcoder.toml"


def _coerce(name: str, raw: Any, source: str) -> Any:
    """``raw`` (a TOML value, or a string from the environment or a flag) as the setting's type,
    or a one-line ConfigError naming the setting, its source and what it accepts."""
    if name in SCALE_SETTINGS:
        return coerce_scale_setting(name, raw, source)
    rule = RULES[name]

    def refuse(shown: Any = raw) -> ConfigError:
        return ConfigError(f"{name} = {shown!r} from {source}: {rule.allowed()}")

    if rule.kind is list:
        return _package_list(raw, refuse)
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if isinstance(raw, str):
        raw = raw.strip()
        if rule.none and raw.lower() in ("", "none", "null"):
            return None
    if raw is None:
        if rule.none:
            return None
        raise refuse()
    if rule.choices:
        word = str(raw).lower() if isinstance(raw, str | bool) else None
        if name == "retrieval" and word is not None:
            word = _RETRIEVAL_WORDS.get(word, word)
        if word not in rule.choices:
            raise refuse()
        return word
    if rule.kind is str:
        if not isinstance(raw, str) or not raw or "\0" in raw:
            raise refuse()
        return raw
    if rule.kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[raw.lower()]
        raise refuse()
    return _number(rule, raw, refuse)


# a pip requirement: a name first (never an option such as --index-url), then a version spec
_PACKAGE_SPEC = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?([<>=!~]=?[A-Za-z0-9.*+!_-]+,?)*"
)


def _package_list(raw: Any, refuse: Callable[..., ConfigError]) -> list[str]:
    """A TOML list, or "numpy, requests" from the environment or a flag, as package specs."""
    if isinstance(raw, str):
        items: list[Any] = raw.replace(",", " ").split()
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise refuse()
    out = []
    for item in items:
        if not isinstance(item, str):
            raise refuse(item)
        spec = item.strip()
        if spec and not _PACKAGE_SPEC.fullmatch(spec):
            raise refuse(item)
        if spec:
            out.append(spec)
    return out


def _number(rule: _Rule, raw: Any, refuse: Callable[..., ConfigError]) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise refuse()  # true is an int to Python, never a count or a number of seconds
    try:
        value = float(raw) if rule.kind is float or isinstance(raw, float) else int(raw)
    except (ValueError, OverflowError):
        raise refuse() from None
    if not math.isfinite(value):
        raise refuse()
    if rule.kind is int:
        if value != int(value):
            raise refuse()
        value = int(value)
    assert rule.low is not None and rule.high is not None
    if value < rule.low or (rule.low_open and value == rule.low) or value > rule.high:
        raise refuse(value)
    return value


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
            setattr(config, name, _coerce(name, raw, label))
            config.sources[name] = label
    return config


def check_config(config: AgentConfig) -> AgentConfig:
    """Apply the rules to a config built in code (``resolve_config`` applies them as it reads)."""
    for name in [*RULES, *SCALE_SETTINGS]:
        setattr(config, name, _coerce(name, getattr(config, name), config.sources.get(name, "AgentConfig")))
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
