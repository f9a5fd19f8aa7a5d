"""What each setting accepts, and turning a raw value (TOML, environment, flag) into it.

Every value is checked when the config is resolved, before any model loads; a refused one is a
one-line :class:`ConfigError` naming the setting, where it came from and what it accepts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragcoder.agent.defaults import MAX_SAMPLES, MAX_STUCK_TEMPERATURE
from ragcoder.agent.scale_settings import SCALE_SETTINGS, coerce_scale_setting
from ragcoder.chains.llm.engines import ENGINES

from ragcoder.errors import ConfigError

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
    "confirm_examples": _Rule(bool),
    "max_instruction_chars": _Rule(int, 1, 100_000),  # 100k characters ~ the whole 32k-token context
    "sandbox_image": _Rule(str),  # auto, standard, scientific or an image tag (checked when opened)
    "sandbox_packages": _Rule(list),  # pip specs such as requests==2.32.3
}


def coerce_setting(name: str, raw: Any, source: str) -> Any:
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
