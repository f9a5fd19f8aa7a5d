"""The settings that take the agent past one machine (docs/scale.md), checked when the config is
resolved: ``llm_url``, ``index_url``, ``docker_hosts`` and ``ray``. Each is unset by default, and
then nothing changes: the embedded model, index and sandbox stay the default.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ragcoder.errors import ConfigError

SCALE_SETTINGS = ("llm_url", "index_url", "docker_hosts", "ray")
DOCKER_SCHEMES = ("unix", "tcp", "ssh")


def _url(name: str, raw: Any, source: str, example: str) -> str | None:
    text = str(raw).strip() if raw is not None else ""
    if text.lower() in ("", "none", "null"):
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} = {raw!r} from {source} is not an http(s) URL: use e.g. {example}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{name} = {raw!r} from {source} has an invalid port") from None
    return text.rstrip("/")


def _docker_hosts(raw: Any, source: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    hosts = tuple(str(item).strip() for item in items if str(item).strip())
    for host in hosts:
        scheme = urlsplit(host).scheme
        if scheme not in DOCKER_SCHEMES:
            raise ConfigError(
                f"docker_hosts: {host!r} from {source} is not a Docker host URL: use "
                "unix:///var/run/docker.sock, tcp://HOST:2375 or ssh://USER@HOST"
            )
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"docker_hosts from {source} names a host twice: {', '.join(hosts)}")
    return hosts


def coerce_scale_setting(name: str, raw: Any, source: str) -> Any:
    """The checked value of one of :data:`SCALE_SETTINGS` (ConfigError naming it and the fix)."""
    if name == "llm_url":
        return _url(name, raw, source, "http://127.0.0.1:8000/v1 (an OpenAI-compatible server)")
    if name == "index_url":
        return _url(name, raw, source, "http://127.0.0.1:8000 (a server from `chroma run`)")
    if name == "docker_hosts":
        return _docker_hosts(raw, source)
    text = str(raw).strip() if raw is not None else ""
    if text.lower() in ("", "none", "null", "off"):
        return None
    if any(ch.isspace() for ch in text):
        raise ConfigError(f"ray = {raw!r} from {source}: use local, auto or a cluster address (HOST:PORT)")
    return text
