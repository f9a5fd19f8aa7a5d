"""The HTTP side of ``ragcoder serve``: an OpenAI-compatible ``/v1/chat/completions`` (streaming
included), ``/v1/models`` and ``/health`` over one warm chat model.

Standard library only (``http.server``), one thread per request, on a unix socket and/or
127.0.0.1. Plain requests from all clients go through the micro-batcher
(:mod:`ragcoder.agent.microbatch`): those arriving together are decoded as one batch. A request for
``n`` samples reads its prompt once (the ort engine's ``n``); a streamed one runs on its own.
Non-standard options a ragcoder client sends: ``prompt_lookup`` (repairs) and ``max_new_tokens``.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

_FINISH = {"stop": "stop", "length": "length", "repetition": "length"}
_MESSAGE_TYPES = {
    "system": SystemMessage,
    "developer": SystemMessage,
    "user": HumanMessage,
    "assistant": AIMessage,
}


class BadRequest(ValueError):
    """A request the server cannot answer (400), with the reason."""


def to_messages(raw: Any) -> list[BaseMessage]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest("messages must be a non-empty list")
    messages: list[BaseMessage] = []
    for item in raw:
        kind = _MESSAGE_TYPES.get(item.get("role")) if isinstance(item, dict) else None
        if kind is None:
            raise BadRequest(f"unsupported message {item!r}: roles are system, user and assistant")
        content = item.get("content") or ""
        if isinstance(content, list):  # content parts: only text here
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        messages.append(kind(content=str(content)))
    return messages


def call_options(body: dict[str, Any]) -> dict[str, Any]:
    """The chat model's call options from an OpenAI request body."""
    options: dict[str, Any] = {}
    budget = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_new_tokens")
    if budget is not None:
        options["max_new_tokens"] = int(budget)
    for key in ("temperature", "top_p", "seed", "prompt_lookup"):
        if body.get(key) is not None:
            options[key] = body[key]
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return options


def usage(messages: list[AIMessage]) -> dict[str, Any]:
    first = messages[0].usage_metadata or {}
    prompt = int(first.get("input_tokens", 0))
    completion = sum(int((m.usage_metadata or {}).get("output_tokens", 0)) for m in messages)
    data: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached = (first.get("input_token_details") or {}).get("cache_read")
    if cached:
        data["prompt_tokens_details"] = {"cached_tokens": cached}
    return data


def _batcher(chat: Any, max_batch: int) -> Any:
    """The micro-batcher over ``chat``, remembering the largest group it ran as one call."""
    from ragcoder.agent.microbatch import MicroBatchingChatModel

    class CountingBatcher(MicroBatchingChatModel):
        largest: int = 0

        def _run_group(self, requests: list, stop: list[str] | None) -> None:
            self.largest = max(self.largest, len(requests))
            super()._run_group(requests, stop)

    return CountingBatcher(inner=chat, max_batch=max_batch)


class ChatService:
    """What the handler calls: the chat model, its micro-batcher and the model's description."""

    def __init__(
        self, chat: Any, *, model: str, engine: str, adapter: str | None, max_batch: int = 8
    ) -> None:
        self.chat = chat
        self.batcher = _batcher(chat, max_batch)
        self.model, self.engine, self.adapter = model, engine, adapter
        self.requests = 0

    def health(self) -> dict[str, Any]:
        return {
            "server": "ragcoder",
            "status": "ok",
            "model": self.model,
            "engine": self.engine,
            "adapter": self.adapter,
            "pid": os.getpid(),
            "requests": self.requests,
            "largest_batch": self.batcher.largest,
        }

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        messages, options = to_messages(body.get("messages")), call_options(body)
        samples = int(body.get("n") or 1)
        if samples > 1:
            stop = options.pop("stop", None)
            result = self.chat.generate([messages], stop=stop, n=samples, **options)
            replies = [g.message for g in result.generations[0]]
            if len(replies) != samples:  # an engine without n: one generation per sample
                replies = [self.chat.invoke(messages, stop=stop, **options) for _ in range(samples)]
        else:
            replies = [self.batcher.invoke(messages, **options)]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": m.content},
                    "finish_reason": _FINISH.get(m.response_metadata.get("finish_reason"), "stop"),
                }
                for i, m in enumerate(replies)
            ],
            "usage": usage(replies),
        }

    def stream(self, body: dict[str, Any]) -> Any:
        """Chunks of a streamed completion (OpenAI's ``chat.completion.chunk`` objects)."""
        messages, options = to_messages(body.get("messages")), call_options(body)
        if int(body.get("n") or 1) != 1:
            raise BadRequest("streaming supports n = 1 only")
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
        }
        yield {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }
        last = None
        for chunk in self.chat.stream(messages, **options):
            if chunk.content:
                yield {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": chunk.content}, "finish_reason": None}],
                }
            if chunk.usage_metadata or chunk.response_metadata.get("finish_reason"):
                last = chunk
        reason = _FINISH.get(last.response_metadata.get("finish_reason") if last else None, "stop")
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
        if (body.get("stream_options") or {}).get("include_usage") and last is not None:
            yield {**base, "choices": [], "usage": usage([last])}


class Handler(BaseHTTPRequestHandler):
    server_version = "ragcoder-serve"
    protocol_version = "HTTP/1.1"
    service: ChatService  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints its own lines
        pass

    def _send_json(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._send_json(200, self.service.health())
        elif self.path.rstrip("/") == "/v1/models":
            model = {
                "id": self.service.model,
                "object": "model",
                "owned_by": "ragcoder",
                "engine": self.service.engine,
            }
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no such path {self.path}")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no such path {self.path}")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            self.service.requests += 1
            if body.get("stream"):
                self._stream(body)
            else:
                self._send_json(200, self.service.complete(body))
        except (BadRequest, ValueError, TypeError) as exc:
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception as exc:  # the model failed: say so, keep serving
            self._error(500, f"{type(exc).__name__}: {exc}", "server_error")

    def _stream(self, body: dict[str, Any]) -> None:
        chunks = self.service.stream(body)
        first = next(chunks)  # bad requests fail here, before the 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        # chunked: a server that dies mid-answer leaves an incomplete body the client notices, where
        # a body ended by closing the connection would just look finished
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._event(f"data: {json.dumps(first)}\n\n")
            for chunk in chunks:
                self._event(f"data: {json.dumps(chunk)}\n\n")
            self._event("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            chunks.close()  # a client that left stops the generation

    def _event(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _UnixHandler(Handler):
    def address_string(self) -> str:
        return "unix"


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> Any:
        request, _ = super().get_request()
        return request, ("unix", 0)


def make_servers(
    service: ChatService, *, socket: str | None, port: int | None, host: str = "127.0.0.1"
) -> list[Any]:
    """The HTTP servers (unix socket, TCP) answering with ``service``; not yet serving."""
    servers: list[Any] = []
    if socket:
        handler = type("Handler", (_UnixHandler,), {"service": service})
        servers.append(UnixHTTPServer(socket, handler))
    if port is not None:
        handler = type("Handler", (Handler,), {"service": service})
        tcp = ThreadingHTTPServer((host, port), handler)
        tcp.daemon_threads = True
        servers.append(tcp)
    return servers


def serve_all(servers: list[Any]) -> None:
    """Serve on every server until interrupted (the last one in this thread)."""
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers[:-1]]
    for thread in threads:
        thread.start()
    try:
        servers[-1].serve_forever()
    finally:
        for server in servers[:-1]:
            server.shutdown()
        for server in servers:
            server.server_close()
