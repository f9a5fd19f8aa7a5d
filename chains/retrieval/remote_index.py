"""The index behind a URL: a Chroma server (``chroma run --path DIR --port P``) shared by every
machine and process that indexes or searches.

The index code keys everything on a folder (clients, cached collections, the BM25 store, the
API-usage prior). A remote index gets a local *stand-in folder* under the user's data dir, named
after the URL: :func:`remote_index_path` registers it, and the indexing functions given that
folder talk to the server (:func:`remote_client`) instead of opening a ``PersistentClient``. The
folder only holds what is derived from this machine (the API-usage prior); what every client must
agree on lives on the server: the chunks, and the index's *generation* (changed by every write,
so each retriever rebuilds its in-memory BM25 when another machine has indexed), kept in the
metadata of a small state collection.

A server restart is waited out: a request that cannot connect is retried for
``RECONNECT_WINDOW_S``; past that, or when the connection breaks mid-request, the caller gets
:class:`ragcoder.errors.IndexUnavailable`, one line naming the URL. The next call after the
server is back just works (httpx opens a new connection).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ragcoder.errors import ConfigError, IndexUnavailable

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

STATE_COLLECTION = "ragcoder-state"
RECONNECT_WINDOW_S = 15.0  # `chroma run` restarts in about 1 s here; 15 s rides out a slow one
_BACKOFF_S = (0.1, 0.25, 0.5, 1.0)  # then 1 s until the window is spent

_lock = threading.Lock()
_urls: dict[str, str] = {}  # stand-in folder -> server URL
_clients: dict[str, ClientAPI] = {}  # server URL -> client


def parse_index_url(url: str, source: str = "index_url") -> tuple[str, int, bool]:
    """(host, port, ssl) of ``http(s)://host[:port]``; ConfigError naming the setting otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"index_url = {url!r} from {source} is not an http(s) URL: use e.g. http://127.0.0.1:8000 "
            "(a server started with `chroma run --path DIR --port 8000`)"
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8000)
    except ValueError:
        raise ConfigError(f"index_url = {url!r} from {source} has an invalid port") from None
    return parts.hostname, port, parts.scheme == "https"


def remote_index_path(url: str) -> Path:
    """The local stand-in folder of the index served at ``url`` (registered for this process)."""
    from ragcoder.chains.paths import data_dir

    host, port, ssl = parse_index_url(url)
    canonical = f"{'https' if ssl else 'http'}://{host}:{port}"
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{host}-{port}")
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    folder = (data_dir() / "remote-index" / f"{slug}-{digest}").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with _lock:
        _urls[str(folder)] = canonical
    return folder


def url_for(index_path: Path) -> str | None:
    """The server URL if ``index_path`` is a registered stand-in folder, else None."""
    return _urls.get(str(index_path))


def remote_client(url: str) -> ClientAPI:
    """One ``chromadb.HttpClient`` per server per process, reconnecting as described above."""
    with _lock:
        if url not in _clients:
            import chromadb
            from chromadb.config import Settings

            host, port, ssl = parse_index_url(url)
            try:  # connecting checks the tenant: one request, not retried
                client = chromadb.HttpClient(
                    host=host, port=port, ssl=ssl, settings=Settings(anonymized_telemetry=False)
                )
            except Exception as exc:
                raise IndexUnavailable(
                    f"the Chroma server at {url} does not answer: {_one_line(exc)}"
                ) from exc
            _clients[url] = _reconnecting(client, url)
        return _clients[url]


def forget_clients() -> None:
    """Drop every client (tests; after the URL changed)."""
    with _lock:
        _clients.clear()


def _state(client: ClientAPI) -> Any:
    return client.get_or_create_collection(STATE_COLLECTION, embedding_function=None)


def read_generation(url: str) -> str:
    """The index's generation as stored on the server ("" before the first write)."""
    return str((_state(remote_client(url)).metadata or {}).get("generation", ""))


def write_generation(url: str, generation: str) -> None:
    _state(remote_client(url)).modify(metadata={"generation": generation, "updated": time.time()})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _reconnecting(client: ClientAPI, url: str) -> ClientAPI:
    """Wrap the client's one request method (Chroma's HTTP client sends everything through
    ``_make_request``) with the reconnect rule. Chroma picks its HTTP class by name, so this is
    done on the instance; a chromadb without that method keeps its plain behaviour."""
    import httpx

    server = getattr(client, "_server", None)
    send = getattr(server, "_make_request", None)
    if send is None:
        return client

    def make_request(method: str, path: str, **kwargs: Any) -> Any:
        deadline = time.monotonic() + RECONNECT_WINDOW_S
        tries = 0
        while True:
            try:
                return send(method, path, **dict(kwargs))
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never sent: safe to repeat
                wait = _BACKOFF_S[min(tries, len(_BACKOFF_S) - 1)]
                tries += 1
                if time.monotonic() + wait > deadline:
                    raise IndexUnavailable(
                        f"the Chroma server at {url} does not answer ({type(exc).__name__}, "
                        f"{RECONNECT_WINDOW_S:.0f} s of retries)"
                    ) from exc
                time.sleep(wait)
            except httpx.TransportError as exc:  # broke mid-request: a write may or may not have landed
                raise IndexUnavailable(
                    f"the connection to the Chroma server at {url} broke: {_one_line(exc)}",
                    hint="rerun: indexing is incremental and searches hold no state",
                ) from exc

    server._make_request = make_request  # type: ignore[union-attr]
    return client
