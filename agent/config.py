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

from ragcoder.errors import ConfigError

if TYPE_CHECKING:
    from ragcoder.agent.loop import CodeAgent

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
SANDBOX_KINDS = ("auto", "docker", "local", "unsafe-local")
RETRIEVAL_MODES = ("auto", "always", "never")
_RETRIEVAL_WORDS = {"true": "always", "yes": "always", "on": "always", "1": "always",
                    "false": "never", "no": "never", "off": "never", "0": "never"}  # fmt: skip


@dataclass
class AgentConfig:
    model: str = DEFAULT_MODEL  # known name, HF folder, .gguf file or cached HF id
    adapter: str | None = None  # LoRA adapter folder made by `ragcoder finetune`
    sandbox: str = "auto"  # auto | docker | local | unsafe-local
    max_attempts: int = 4  # 1 generation + 3 repairs: most fixes land in the first two repairs
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
    # repairs are sampled (seeded) at this temperature; none: the candidates' temperature (0.8)
    stuck_temperature: float | None = None
    samples: int = 4  # candidates per round, selected by running them against tests (docs/results.md)
    generate_tests: bool = True  # with no tests from the user, the model writes some to rank candidates
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


def user_config_path() -> Path:
    env = os.environ.get("RAGCODER_CONFIG")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("ragcoder")) / "ragcoder.toml"


def project_config_path() -> Path:
    return Path.cwd() / "ragcoder.toml"


def _coerce(name: str, raw: Any, source: str) -> Any:
    kinds = {f.name: f.type for f in fields(AgentConfig)}
    kind = str(kinds[name])
    if name == "retrieval":
        word = str(raw).lower()
        value = _RETRIEVAL_WORDS.get(word, word)
        if value not in RETRIEVAL_MODES:
            raise ConfigError(
                f"retrieval = {raw!r} from {source}: choose one of {', '.join(RETRIEVAL_MODES)}"
            )
        return value
    try:
        if raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null") and "None" in kind):
            return None
        if kind.startswith("int"):
            value: Any = int(raw)
        elif kind.startswith("float"):
            value = float(raw)
        elif kind.startswith("bool"):
            value = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} = {raw!r} from {source} is not a valid {kind}") from None
    if name == "sandbox" and value not in SANDBOX_KINDS:
        raise ConfigError(f"sandbox = {value!r} from {source}: choose one of {', '.join(SANDBOX_KINDS)}")
    if name == "stuck_temperature" and value is not None and not 0 < value <= 2:
        raise ConfigError(
            f"stuck_temperature = {value} from {source}: use a value in (0, 2], or none for greedy repairs"
        )
    if name in ("max_attempts", "samples") and value < 1:
        raise ConfigError(f"{name} = {value} from {source}: it must be at least 1")
    return value


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    data = data.get("ragcoder", data)
    known = {f.name for f in fields(AgentConfig)} - {"sources"}
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
    layers: list[tuple[str, dict[str, Any]]] = [
        (str(user_config_path()), _read_toml(user_config_path())),
        (str(project_config_path()), _read_toml(project_config_path())),
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


def build_agent(
    config: AgentConfig,
    *,
    workers: int = 1,
    quantize: str = "auto",
    models: Callable[[Any], tuple[Any, Any]] | None = None,
) -> CodeAgent:
    """Open the sandbox first (fails fast), then the retriever and the model (slow).

    With ``workers > 1`` (batch runs) the sandbox keeps that many warm servers and the model is
    wrapped so that concurrent generations share one batched call. ``models(chat)`` may replace
    the (generate, repair) pair built from the loaded chat model (evaluation samples with it).
    """
    from ragcoder.agent.loop import CodeAgent
    from ragcoder.chains.llm.chat_model import load_chat_model, repair_model
    from ragcoder.chains.retrieval.gate import decide_retrieval
    from ragcoder.sandbox import open_sandbox

    sandbox = open_sandbox(config.sandbox, **({"pool_size": workers} if workers > 1 else {}))
    try:
        retriever = None
        if config.retrieval != "never":
            from ragcoder.chains.retrieval.retriever import open_retriever

            retriever = open_retriever(config.index_path, k=config.k)
        chat: Any = load_chat_model(
            config.model, adapter=config.adapter, quantize=quantize, max_new_tokens=config.max_new_tokens
        )  # type: ignore[arg-type]
        if retriever is not None and config.retrieval_guess:
            from ragcoder.chains.retrieval.api_guess import load_api_guesser

            retriever.api_guesser = load_api_guesser(config.model, adapter=config.adapter, quantize=quantize)
        if models is not None:
            model, repair = models(chat)
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
        model, sandbox, retriever=retriever, repair_model=repair, max_attempts=config.max_attempts,
        timeout=config.timeout, repair_temperature=config.stuck_temperature, samples=config.samples,
        generate_tests=config.generate_tests,
        retrieval_gate=decide_retrieval if config.retrieval == "auto" else None,
    )  # fmt: skip
