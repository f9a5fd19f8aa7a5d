"""Using a running ``ragcoder serve`` instead of loading the model in this process.

``ragcoder serve`` holds one warm model behind an OpenAI-compatible API on a unix socket in the
user's runtime dir (:func:`socket_path`), and on 127.0.0.1 when asked. :func:`open_chat_model` is
what the agent calls: the server's model when one answers and holds the model asked for (through
the socket, or ``server=URL``), the in-process model otherwise. :class:`ServedChatModel` talks to
the server with ``langchain_openai.ChatOpenAI`` and keeps the local model's call options
(``max_new_tokens``, ``prompt_lookup``, ``temperature``/``top_p``/``seed``, ``n``); when the server
stops answering mid-request it says so in one line on stderr and carries on in-process.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr
from ragcoder.chains.llm.row_seeds import RowSeededBatch

from ragcoder.errors import ServeError

SOCKET_NAME = "serve.sock"
UNIX_BASE_URL = "http://ragcoder.sock/v1"  # the host is ignored on a unix socket
HEALTH_TIMEOUT_S = 2.0
OFF = ("off", "none", "no", "false", "0")  # server = off: always load in this process


def runtime_dir() -> Path:
    """The user's private runtime folder for ragcoder (``RAGCODER_RUNTIME_DIR`` overrides)."""
    env = os.environ.get("RAGCODER_RUNTIME_DIR")
    if env:
        folder = Path(env).expanduser()
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "ragcoder"
    else:
        folder = Path(tempfile.gettempdir()) / f"ragcoder-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def socket_path() -> Path:
    return runtime_dir() / SOCKET_NAME


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /health`` of a running server says."""

    base_url: str
    """The OpenAI base URL (``.../v1``)."""
    socket: str | None
    model: str
    engine: str
    adapter: str | None
    pid: int


def _http_client(socket: str | None, timeout: float | None) -> Any:
    import httpx

    transport = httpx.HTTPTransport(uds=socket) if socket else None
    return httpx.Client(transport=transport, timeout=timeout)


def probe(base_url: str | None = None, *, socket: str | Path | None = None) -> ServerInfo | None:
    """The server at ``base_url`` (or on ``socket``), or None when nothing answers there."""
    import httpx

    sock = str(socket) if socket else None
    url = (base_url or UNIX_BASE_URL).rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    try:
        with _http_client(sock, HEALTH_TIMEOUT_S) as client:
            reply = client.get(url.removesuffix("/v1") + "/health")
            data = reply.json() if reply.status_code == 200 else None
    except (httpx.HTTPError, OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("server") != "ragcoder":
        return None
    return ServerInfo(
        url, sock, data.get("model", ""), data.get("engine", ""), data.get("adapter"), data.get("pid", 0)
    )


def find_server(server: str | None = None) -> ServerInfo | None:
    """The server to use: ``server`` (a URL; :class:`ServeError` when it does not answer), nothing
    when it is ``off``, else the one on the user's socket if it answers."""
    if server and server.strip().lower() in OFF:
        return None
    if server:
        info = probe(server)
        if info is None:
            raise ServeError(
                f"no ragcoder server answers at {server}",
                hint="start one with `ragcoder serve`, or drop --server",
            )
        return info
    path = socket_path()
    return probe(socket=path) if path.exists() else None


def serves(info: ServerInfo, spec: str, adapter: str | None, engine: str) -> bool:
    """Does the server hold the model (and adapter, and engine unless ``auto``) asked for?"""
    from ragcoder.chains.llm.engines import adapter_id

    wanted_adapter = adapter_id(adapter) if adapter else None
    return (
        info.model == served_name(spec)
        and info.adapter == wanted_adapter
        and (engine == "auto" or info.engine == engine)
    )


def served_name(spec: str | Path) -> str:
    """How a server names its model: a known name as it is, a path resolved."""
    from ragcoder.chains.llm.models import KNOWN_MODELS

    text = str(spec).strip()
    return text if text in KNOWN_MODELS else str(Path(text).expanduser().resolve())


class ServedChatModel(RowSeededBatch, BaseChatModel):
    """A chat model answered by a running ``ragcoder serve``, with an in-process fallback."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    info: ServerInfo
    """The server (from :func:`find_server`)."""
    fallback: Callable[[], BaseChatModel]
    """Loads the same model in this process (called once, if the server stops answering)."""
    max_new_tokens: int = 512
    """Default token budget per call (``max_new_tokens=`` per call overrides)."""

    _client: Any = PrivateAttr(default=None)
    _local: BaseChatModel | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "ragcoder_served"

    @property
    def model_id(self) -> str:
        return self.info.model

    @property
    def engine(self) -> str:
        return f"{self.info.engine} (served)" if self._local is None else "in-process"

    def _openai(self) -> Any:
        if self._client is None:
            from langchain_openai import ChatOpenAI

            self._client = ChatOpenAI(
                base_url=self.info.base_url,
                api_key="ragcoder",
                model=self.info.model,
                http_client=_http_client(self.info.socket, None),
                max_retries=0,
                stream_usage=True,
            )
        return self._client

    def _call_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {"max_tokens": int(kwargs.get("max_new_tokens") or self.max_new_tokens)}
        for key in ("temperature", "top_p", "seed", "n"):
            if kwargs.get(key) is not None:
                options[key] = kwargs[key]
        if kwargs.get("prompt_lookup"):
            options["extra_body"] = {"prompt_lookup": kwargs["prompt_lookup"]}
        return options

    def _fall_back(self, error: BaseException) -> BaseChatModel:
        with self._lock:
            if self._local is None:
                print(
                    f"ragcoder: the server at {self.info.socket or self.info.base_url} stopped answering "
                    f"({type(error).__name__}); loading the model in this process",
                    file=sys.stderr,
                )
                self._local = self.fallback()
            return self._local

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self._local is None:
            try:
                result = self._openai()._generate(messages, stop=stop, **self._call_options(kwargs))
                for generation in result.generations:
                    generation.message.response_metadata["model_name"] = self.info.model
                return result
            except Exception as error:
                if not _connection_error(error):
                    raise
                self._fall_back(error)
        local = self._local
        assert local is not None
        return local._generate(messages, stop=stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        shown = ""
        if self._local is None:
            try:
                finished = False
                for chunk in self._openai()._stream(messages, stop=stop, **self._call_options(kwargs)):
                    shown += chunk.text
                    finished = finished or bool(chunk.message.response_metadata.get("finish_reason"))
                    if run_manager and chunk.text:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
                if finished:
                    return
                raise ConnectionError("the answer ended without a finish reason")
            except Exception as error:
                if not _connection_error(error):
                    raise
                self._fall_back(error)
        local = self._local
        assert local is not None
        # the answer so far came from the server: the local model repeats it (greedy), and only
        # what follows is passed on
        for chunk in local._stream(messages, stop=stop, **kwargs):
            text = chunk.text
            if shown:
                cut = min(len(shown), len(text))
                if text[:cut] != shown[:cut]:
                    raise ServeError("the server died mid-answer and the local model answered differently")
                shown, text = shown[cut:], text[cut:]
                if not text and not chunk.message.response_metadata:
                    continue
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=text, **_extras(chunk.message)))
            if run_manager and text:
                run_manager.on_llm_new_token(text, chunk=chunk)
            yield chunk


def _extras(message: Any) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for key in ("usage_metadata", "response_metadata", "chunk_position"):
        value = getattr(message, key, None)
        if value:
            extras[key] = value
    return extras


def _connection_error(error: BaseException) -> bool:
    """The server is gone (refused, reset, closed mid-answer), not: it answered with an error."""
    import httpx
    import openai

    if isinstance(error, openai.APIConnectionError | httpx.TransportError | ConnectionError):
        return True
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and _connection_error(cause)


def open_chat_model(
    spec: str,
    *,
    engine: str = "auto",
    adapter: str | None = None,
    server: str | None = None,
    quantize: str = "auto",
    max_new_tokens: int = 512,
) -> BaseChatModel:
    """The chat model the agent uses: served when a server holds this model, else loaded here."""
    from ragcoder.chains.llm.engines import check_engine, load_chat

    engine = check_engine(engine)

    def local() -> BaseChatModel:
        return load_chat(
            spec, engine=engine, adapter=adapter, quantize=quantize, max_new_tokens=max_new_tokens
        )

    info = find_server(server)
    if info is not None and serves(info, spec, adapter, engine):
        return ServedChatModel(info=info, fallback=local, max_new_tokens=max_new_tokens)
    if info is not None and server:
        raise ServeError(
            f"the server at {server} holds {info.model} ({info.engine}), not {served_name(spec)}",
            hint="start `ragcoder serve` with the same --model/--adapter, or drop --server",
        )
    return local()
