"""The smallest real OpenAI-compatible server we can run here, for the ``llm_url`` tests and the
scale bench: stdlib ``ThreadingHTTPServer`` in front of our own local chat model.

    python tests/scale/openai_server.py --model smollm2-135m-instruct --port 8011 [--max-batch 4]

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain and streamed as server-sent
events, with usage when ``stream_options.include_usage`` asks for it; ``temperature``, ``seed``,
``top_p``, ``stop``, ``max_tokens``/``max_completion_tokens``). Requests run in threads; with
``--max-batch N`` concurrent ones share one batched generation (the agent's micro-batcher), else
the model's lock takes them one at a time. It prints ``listening on PORT`` once it accepts
connections. A stand-in until ``ragcoder serve`` (the engine work) lands; then the tests use that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _messages(raw: list[dict[str, Any]]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {
        "system": SystemMessage,
        "developer": SystemMessage,
        "user": HumanMessage,
        "assistant": AIMessage,
    }
    out = []
    for message in raw:
        content = message.get("content") or ""
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append(kinds.get(message.get("role", "user"), HumanMessage)(content=content))
    return out


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_new = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_new:
        options["max_new_tokens"] = int(max_new)
    if body.get("temperature"):
        options["temperature"] = float(body["temperature"])
        if body.get("top_p") is not None:
            options["top_p"] = float(body["top_p"])
        if body.get("seed") is not None:
            options["seed"] = int(body["seed"])
    stop = body.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return options


def make_handler(chat: Any, batched: Any, name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read stdout
            pass

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "stand-in"}],
                    },
                )
            elif self.path.rstrip("/") in ("/health", "/v1/health"):
                self._json(200, {"status": "ok"})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                messages, options = _messages(body["messages"]), _options(body)
            except (ValueError, KeyError, TypeError) as exc:
                self._json(
                    400, {"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}}
                )
                return
            if body.get("model") not in (None, name):
                self._json(
                    404,
                    {
                        "error": {
                            "message": f"model {body.get('model')!r} is not served here",
                            "type": "not_found",
                        }
                    },
                )
                return
            if body.get("stream"):
                self._stream(messages, options, bool((body.get("stream_options") or {}).get("include_usage")))
                return
            reply = batched.invoke(messages, **options)
            usage = reply.usage_metadata or {}
            self._json(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.content},
                            "finish_reason": reply.response_metadata.get("finish_reason") or "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": usage.get("input_tokens", 0),
                        "completion_tokens": usage.get("output_tokens", 0),
                        "total_tokens": usage.get("total_tokens", 0),
                    },
                },
            )

        def _event(self, payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            chunk = f"data: {data}\n\n".encode()
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()

        def _stream(self, messages: list[Any], options: dict[str, Any], include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            ident, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
            base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name}
            usage: dict[str, Any] = {}
            finish = "stop"
            self._event(
                {
                    **base,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                }
            )
            for piece in chat.stream(messages, **options):
                if piece.usage_metadata:
                    usage = dict(piece.usage_metadata)
                    finish = piece.response_metadata.get("finish_reason") or finish
                if piece.content:
                    self._event(
                        {
                            **base,
                            "choices": [
                                {"index": 0, "delta": {"content": piece.content}, "finish_reason": None}
                            ],
                        }
                    )
            self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
            if include_usage:
                self._event(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.get("input_tokens", 0),
                            "completion_tokens": usage.get("output_tokens", 0),
                            "total_tokens": usage.get("total_tokens", 0),
                        },
                    }
                )
            self._event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="A known model name, HF folder or .gguf file.")
    parser.add_argument(
        "--name", default=None, help="The id served at /v1/models [default: the model's name]."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--quantize", default="none", choices=["auto", "int8", "none"])
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--max-batch", type=int, default=1, help="Concurrent requests batched together.")
    args = parser.parse_args(argv)

    from ragcoder.chains.llm.chat_model import load_chat_model

    chat = load_chat_model(
        args.model,
        quantize=args.quantize,
        max_new_tokens=args.max_new_tokens,
        batch_size=max(1, args.max_batch),
    )
    batched: Any = chat
    if args.max_batch > 1:
        from ragcoder.agent.microbatch import MicroBatchingChatModel

        batched = MicroBatchingChatModel(inner=chat, max_batch=args.max_batch)
    name = args.name or chat.model_id
    server = ThreadingHTTPServer((args.host, args.port), make_handler(chat, batched, name))
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
