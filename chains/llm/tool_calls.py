"""Tools and JSON answers for a local chat model, through the tokenizer's chat template.

Engine-independent: a chat model that turns a prompt string into text (torch, ONNX Runtime GenAI)
gets tool calling with ``turn = chat_turn(tokenizer, messages, **options)``: generate from
``turn.prompt + turn.prefill``, then ``turn.message(turn.prefill + text)`` (or feed the pieces to
``turn.reply_parser()`` when streaming).

- The prompt comes from the model's own chat template (``apply_chat_template(..., tools=...)``):
  Qwen2.5's renders tools, assistant tool calls and ``role: tool`` results itself. A template that
  knows no tools (SmolLM2's) gets the same Hermes-style format written into the messages: the tool
  list in the system message, calls as ``<tool_call>`` blocks, results as ``<tool_response>``.
- The reply's ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks become
  ``AIMessage.tool_calls`` (a block that does not parse: ``invalid_tool_calls``); the rest is content.
- A forced choice is written into the answer, since a local model has no API to force it:
  ``tool_choice=<name>`` prefills ``<tool_call>\\n{"name": "<name>", "arguments":``, ``"any"``
  prefills ``<tool_call>\\n{"name":`` (the name too when one tool is bound); ``"none"`` leaves the
  tools out of the prompt and reads no calls. ``response_format`` (JSON) adds an instruction with
  the schema to the system message and prefills ``{``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.messages.utils import convert_to_openai_messages
from ragcoder.chains.llm.json_reading import read_json, read_json_prefix

from ragcoder.errors import ChatInputError

__all__ = [
    "ChatTurn",
    "ReplyParser",
    "chat_turn",
    "normalize_tool_choice",
    "template_supports_tools",
]

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# Qwen2.5's own wording (its template), for templates that render no tools themselves
TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n'
    "</tool_call>"
)
JSON_ONLY = "Reply with one JSON object and nothing else: no prose, no code fence."
JSON_SCHEMA = JSON_ONLY[:-1] + ". It must match this JSON schema:\n{schema}"
# content blocks that carry no text for the model: the reasoning of other providers, tool-use
# blocks (the message's tool_calls hold them)
_SILENT_BLOCKS = {"thinking", "redacted_thinking", "reasoning", "tool_use", "tool_call", "function_call"}


def template_supports_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders a ``tools`` list (Qwen2.5's does, SmolLM2's not)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, Mapping):
        return "tool_use" in template or any("tools" in str(t) for t in template.values())
    return "tools" in template


def normalize_tool_choice(tool_choice: Any, tool_names: Sequence[str]) -> str | None:
    """``"auto"``, ``"none"``, ``"any"`` or a tool's name, from any form LangChain and OpenAI use."""
    if tool_choice is None or tool_choice is False or tool_choice == "auto":
        return None if tool_choice is None else "auto"
    if tool_choice is True or tool_choice in ("any", "required"):
        return "any"
    if tool_choice == "none":
        return "none"
    name = tool_choice
    if isinstance(tool_choice, Mapping):  # {"type": "function", "function": {"name": ...}} or {"name": ...}
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if not isinstance(name, str) or name not in tool_names:
        raise ChatInputError(
            f"tool_choice {tool_choice!r} names no bound tool (bound: {', '.join(tool_names) or 'none'})",
            hint="pass 'auto', 'any', 'none' or the name of one of the tools given to bind_tools",
        )
    return name


def _text_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") not in _SILENT_BLOCKS:
            raise ChatInputError(
                f"{where} has a {block.get('type')!r} block; the local chat model reads text only",
                hint="send text (describe the image or file in words) or use a multimodal model",
            )
    return "".join(parts)


def _chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages as the chat-template dicts HF uses: text content, tool-call arguments as dicts."""
    for i, original in enumerate(messages):  # before conversion, which renames the block types
        if not isinstance(original.content, str):
            _text_content(original.content, f"message {i}")
    out = []
    for i, message in enumerate(convert_to_openai_messages(list(messages), text_format="string")):
        entry: dict[str, Any] = {
            "role": message["role"],
            "content": _text_content(message.get("content"), f"message {i}"),
        }
        if entry["role"] in ("developer", "function"):
            entry["role"] = "system" if entry["role"] == "developer" else "tool"
        calls = []
        for call in message.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            arguments = json.loads(arguments) if isinstance(arguments, str) and arguments else arguments or {}
            calls.append(
                {
                    "type": "function",
                    "id": call.get("id"),
                    "function": {"name": call["function"]["name"], "arguments": arguments},
                }
            )
        if calls:
            entry["tool_calls"] = calls
        for key in ("tool_call_id", "name"):
            if message.get(key):
                entry[key] = message[key]
        out.append(entry)
    return out


def _call_block(call: Mapping[str, Any]) -> str:
    body = {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}
    return f"{OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{CLOSE}"


def _add_system(dicts: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if dicts and dicts[0]["role"] == "system":
        return [{**dicts[0], "content": f"{dicts[0]['content']}\n\n{text}".lstrip()}, *dicts[1:]]
    return [{"role": "system", "content": text}, *dicts]


def _as_plain_text(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls and results written as text, for a template that renders neither."""
    out: list[dict[str, Any]] = []
    for entry in dicts:
        if entry["role"] == "tool":
            response = f"<tool_response>\n{entry['content']}\n</tool_response>"
            if out and out[-1].get("tool_results"):  # consecutive results: one user turn, as Qwen's template
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response, "tool_results": True})
        elif entry.get("tool_calls"):
            blocks = [_call_block(c) for c in entry["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join(filter(None, [entry["content"], *blocks]))})
        else:
            out.append({k: v for k, v in entry.items() if k in ("role", "content")})
    return [{"role": e["role"], "content": e["content"]} for e in out]


def _json_instruction(response_format: Mapping[str, Any]) -> tuple[str, bool]:
    """The system instruction for a JSON answer, and whether the answer is an object (prefill ``{``)."""
    schema = response_format.get("schema")
    if schema is None and isinstance(response_format.get("json_schema"), Mapping):
        schema = response_format["json_schema"].get("schema")
    if schema is None:
        return JSON_ONLY, True
    return JSON_SCHEMA.format(schema=json.dumps(schema, ensure_ascii=False)), schema.get(
        "type", "object"
    ) == "object"


@dataclass(frozen=True)
class ChatTurn:
    """A rendered prompt and how to read the answer to it."""

    prompt: str
    """The chat-formatted prompt, ending where the model's answer starts."""
    prefill: str = ""
    """Answer text written for the model (a forced tool call's start, ``{`` for JSON); it is part of
    the answer: generate from ``prompt + prefill`` and read ``prefill + generated``."""
    tool_names: tuple[str, ...] | None = None
    """The bound tools' names; None: the answer is read as plain text."""

    def reply_parser(self) -> ReplyParser:
        return ReplyParser(reads_tools=self.tool_names is not None, tool_names=self.tool_names or ())

    def message(self, text: str, **fields: Any) -> AIMessage:
        """The whole answer (``prefill`` included) as an AIMessage with its tool calls."""
        parser = self.reply_parser()
        parser.feed(text)
        parser.flush()
        return AIMessage(
            content=parser.content.strip() if parser.calls else parser.content,
            tool_calls=[c for c in parser.calls if c.get("type") == "tool_call"],
            invalid_tool_calls=[c for c in parser.calls if c.get("type") == "invalid_tool_call"],
            **fields,
        )


def chat_turn(
    tokenizer: Any,
    messages: Sequence[BaseMessage],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    response_format: Mapping[str, Any] | None = None,
) -> ChatTurn:
    """Render ``messages`` (any LangChain history, tool calls and results included) for the model.

    ``tools`` are OpenAI-format tool dicts (``convert_to_openai_tool``), ``response_format`` OpenAI's
    (``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {"schema": ...}}``) or
    ``{"type": "json_object", "schema": ...}``.
    """
    if not messages:
        raise ChatInputError("no messages to answer", hint="pass at least one message")
    tools = list(tools or [])
    names = tuple(t["function"]["name"] for t in tools)
    choice = normalize_tool_choice(tool_choice, names) if tools else None
    if choice == "none":
        tools = []
    native = template_supports_tools(tokenizer)
    dicts = _chat_dicts(messages)
    if not native:
        dicts = _as_plain_text(dicts)
        if tools:
            listing = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
            dicts = _add_system(dicts, TOOLS_PREAMBLE.format(tools=listing))
    prefill = ""
    if response_format and response_format.get("type") in ("json_object", "json_schema"):
        instruction, is_object = _json_instruction(response_format)
        dicts = _add_system(dicts, instruction)
        prefill = "{" if is_object else ""
    template_kwargs: dict[str, Any] = {"tools": tools} if native and tools else {}
    prompt = tokenizer.apply_chat_template(
        dicts, tokenize=False, add_generation_prompt=True, **template_kwargs
    )
    # the prefill ends where the model's tokenizer ends a token: Qwen writes `"arguments":` then ` {"`,
    # and a prefill ending in a lone space made it answer `3}` instead of `{"input": 3}}`
    if choice == "any":
        prefill = f'{OPEN}\n{{"name":' + (f' "{names[0]}", "arguments":' if len(names) == 1 else "")
    elif choice not in (None, "auto", "none"):
        prefill = f'{OPEN}\n{{"name": "{choice}", "arguments":'
    return ChatTurn(prompt=prompt, prefill=prefill, tool_names=names if tools else None)


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _as_call(value: Any) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """A decoded call's name and arguments, or the reason it is not a call."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None, None, "a tool call needs a JSON object with a string 'name'"
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return value["name"], None, "the 'arguments' string is not JSON"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return value["name"], None, "'arguments' must be a JSON object"
    return value["name"], arguments, None


def _read_block(body: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """A ``<tool_call>`` body's name and arguments, or the reason it cannot be read."""
    try:
        return _as_call(read_json(body))
    except ValueError:
        return None, None, "the tool call is not valid JSON"


def _bare_calls(text: str, names: Sequence[str]) -> tuple[list[tuple[str, dict[str, Any]]], str] | None:
    """Calls written without ``<tool_call>`` tags, as a reply that is a JSON call (or a list of them),
    bare or in a code fence, naming bound tools; and the text after it. None: not such a reply."""
    body, after = text.strip(), ""
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body, _, after = body.partition("```")
    try:
        value, rest = read_json_prefix(body)
    except ValueError:
        return None
    calls = []
    for item in value if isinstance(value, list) else [value]:
        name, arguments, error = _as_call(item)
        if error is not None or name not in names:
            return None
        calls.append((name, arguments))
    return (calls, (rest + after).strip()) if calls else None


@dataclass
class ReplyParser:
    """Splits a reply, fed piece by piece, into content text and tool calls.

    ``feed`` and ``flush`` return the pieces that are now certain: text (str) or a tool-call chunk
    (dict). Text that could open a ``<tool_call>`` is held back until it is clear. A block that does
    not parse comes back as text when streaming (no half-read call is ever executed) and as an
    ``invalid_tool_call`` in :meth:`ChatTurn.message`. A reply that opens like a bare JSON object
    (``{`` or a json code fence) is held whole: it is a call if it names one of ``tool_names``
    (small models often drop the tags), otherwise text.
    """

    reads_tools: bool = True
    tool_names: tuple[str, ...] = ()
    content: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    _held: str = ""
    _in_block: bool = False
    _opening: str | None = ""  # the reply's start while it may still be a bare call; None: decided
    _whole: bool = False  # holding the whole reply: it opened like a bare call

    def feed(self, text: str) -> list[str | dict[str, Any]]:
        if not self.reads_tools:
            self.content += text
            return [text] if text else []
        if self._opening is not None and self.tool_names:
            self._opening += text
            head = self._opening.lstrip()
            if head.startswith(("{", "[", "```json", "```\n{")):
                self._whole = True
            elif not head or any(opening.startswith(head) for opening in ("```json", "```\n{")):
                return []  # not clear yet
            text, self._opening = self._opening, None
        self._opening = None
        self._held += text
        return [] if self._whole else self._scan()

    def _scan(self) -> list[str | dict[str, Any]]:
        out: list[str | dict[str, Any]] = []
        while True:
            if self._in_block:
                end = self._held.find(CLOSE)
                if end < 0:
                    return out
                out += self._close_block(self._held[:end])
                self._held, self._in_block = self._held[end + len(CLOSE) :], False
                continue
            start = self._held.find(OPEN)
            if start >= 0:
                out += self._text(self._held[:start])
                self._held, self._in_block = self._held[start + len(OPEN) :], True
                continue
            keep = max((k for k in range(1, len(OPEN)) if self._held.endswith(OPEN[:k])), default=0)
            out += self._text(self._held[: len(self._held) - keep])
            self._held = self._held[len(self._held) - keep :]
            return out

    def flush(self) -> list[str | dict[str, Any]]:
        """The end of the reply: an unclosed block is read as far as it goes."""
        if self._opening:
            self._held, self._opening = self._opening, None
        if self._whole:
            self._whole = False
            bare = _bare_calls(self._held, self.tool_names) if OPEN not in self._held else None
            if bare is not None:
                self._held = ""
                return [
                    p for name, arguments in bare[0] for p in self._add_call(name, arguments)
                ] + self._text(bare[1])
            out = self._scan()
        else:
            out = []
        held, self._held = self._held, ""
        if not self._in_block:
            return out + self._text(held)
        self._in_block = False
        return out + (self._close_block(held) if held.strip() else [])

    def _text(self, text: str) -> list[str | dict[str, Any]]:
        self.content += text
        return [text] if text else []

    def _add_call(self, name: str, arguments: dict[str, Any]) -> list[str | dict[str, Any]]:
        call_id = _new_id()
        self.calls.append(tool_call(name=name, args=arguments, id=call_id))
        args = json.dumps(arguments, ensure_ascii=False)
        return [tool_call_chunk(name=name, args=args, id=call_id, index=len(self.calls) - 1)]

    def _close_block(self, body: str) -> list[str | dict[str, Any]]:
        name, arguments, error = _read_block(body)
        if error is None:
            return self._add_call(name, arguments)
        self.calls.append(invalid_tool_call(name=name, args=body.strip(), id=_new_id(), error=error))
        return [f"{OPEN}{body}{CLOSE}"]


def chunk_of(piece: str | dict[str, Any]) -> AIMessageChunk:
    """A :class:`ReplyParser` piece as a message chunk."""
    if isinstance(piece, str):
        return AIMessageChunk(content=piece)
    return AIMessageChunk(content="", tool_call_chunks=[piece])
