"""The LangChain chat-model surface every local engine shares: tools, structured output, ls params.

A local chat model (``LocalChatModel`` on torch, or another engine's) inherits
:class:`LocalChatFeatures` before its LangChain base class and renders its prompts with
:func:`ragcoder.chains.llm.tool_calls.chat_turn`; what it gets:

- ``bind_tools(tools, tool_choice=...)``: tools reach the prompt (see ``tool_calls`` for how a
  forced choice is written into the answer);
- ``with_structured_output(schema, method=...)`` for a pydantic class (v1 or v2), a TypedDict or a
  JSON schema: ``"function_calling"`` (the default: a forced call of a tool shaped like the schema),
  ``"json_schema"`` (a JSON answer, the schema in the system message) or ``"json_mode"`` (a JSON
  answer; the schema is shown too when given). Every method validates the answer against the
  schema: invoke raises ``OutputParserException`` (or returns it with ``include_raw=True``), stream
  yields only answers that validate;
- ``_get_ls_params``: ``ls_provider``, ``ls_model_name``, ``ls_model_type``, ``ls_temperature``,
  ``ls_max_tokens``, ``ls_stop`` for tracing.

The model needs the fields ``model_id``, ``temperature``, ``max_tokens`` and ``stop``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, ClassVar, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models.base import LangSmithParams
from langchain_core.output_parsers.transform import BaseCumulativeTransformOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from ragcoder.chains.llm.json_reading import read_json
from ragcoder.chains.llm.tool_calls import normalize_tool_choice

from ragcoder.errors import ChatInputError

__all__ = ["LocalChatFeatures", "StructuredAnswerParser"]

Method = Literal["function_calling", "json_schema", "json_mode"]


def _validator(schema: Any) -> Callable[[Any], Any]:
    """A function that returns the schema's object for a parsed value, or raises if it does not fit."""
    if schema is None:
        return lambda value: value
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        if hasattr(schema, "model_validate"):
            return schema.model_validate
        return schema.parse_obj  # pydantic.v1 models
    import jsonschema

    json_schema = convert_to_json_schema(schema)
    checker = jsonschema.Draft202012Validator(json_schema)

    def check(value: Any) -> Any:
        checker.validate(value)
        return value

    return check


def _first_json_value(text: str) -> Any:
    """The first JSON object in ``text`` (after any prose or code fence); trailing text is ignored."""
    start = text.find("{")
    if start < 0:
        raise ValueError("the answer holds no JSON object")
    return read_json(text[start:])


class StructuredAnswerParser(BaseCumulativeTransformOutputParser[Any]):
    """Reads a structured answer from a tool call (``tool_name``) or from JSON text, and validates it.

    While streaming, a partial answer that does not parse or validate yet yields nothing.
    """

    answer_schema: Any = None
    """A pydantic class (v1 or v2), a TypedDict, a JSON schema, or None (any JSON object)."""
    tool_name: str | None = None
    """Read the arguments of this tool's first call; None: read the first JSON object in the text."""

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        generation = result[0]
        text = generation.text
        try:
            if self.tool_name is not None:
                message = generation.message if isinstance(generation, ChatGeneration) else None
                calls = [c for c in getattr(message, "tool_calls", []) if c["name"] == self.tool_name]
                if not calls:
                    raise ValueError(f"the model made no {self.tool_name!r} tool call")
                value = calls[0]["args"]
            else:
                value = _first_json_value(text)
            return _validator(self.answer_schema)(value)
        except Exception as error:  # JSON, pydantic and jsonschema errors alike
            if partial:
                return None
            raise OutputParserException(
                f"the answer does not fit the schema: {error}", llm_output=text
            ) from error

    def parse(self, text: str) -> Any:
        return self.parse_result([Generation(text=text)])

    @property
    def _type(self) -> str:
        return "ragcoder_structured_answer"


class LocalChatFeatures:
    """Mixin for a local chat model (before its LangChain base class): see the module docstring."""

    ls_provider: ClassVar[str] = "huggingface"
    """``ls_provider`` in traces: where the weights come from (HF transformers models)."""

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """Tools the model may call: ``tool_choice`` ``"auto"`` (default), ``"any"``/``"required"``/True
        (some tool), a tool's name (that tool) or ``"none"`` (no tools this time)."""
        formatted = [convert_to_openai_tool(t, strict=strict) for t in tools]
        choice = normalize_tool_choice(tool_choice, [t["function"]["name"] for t in formatted])
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)  # type: ignore[attr-defined]

    def with_structured_output(
        self,
        schema: dict | type | None = None,
        *,
        method: Method = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """Answers as ``schema`` objects (pydantic) or dicts (TypedDict, JSON schema): see the module docstring."""
        if kwargs:
            raise ChatInputError(f"with_structured_output got unknown arguments {sorted(kwargs)}")
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ChatInputError(
                f"unknown structured-output method {method!r}",
                hint="use 'function_calling', 'json_schema' or 'json_mode'",
            )
        if schema is None and method != "json_mode":
            raise ChatInputError(
                f"method {method!r} needs a schema", hint="pass one, or use method='json_mode'"
            )
        traced = {"kwargs": {"method": method}, "schema": schema} if schema is not None else None
        extra = {"ls_structured_output_format": traced} if traced else {}
        if method == "function_calling":
            name = convert_to_openai_tool(schema, strict=strict)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, strict=strict, **extra)
            parser = StructuredAnswerParser(answer_schema=schema, tool_name=name)
        else:
            json_schema = convert_to_json_schema(schema) if schema is not None else None
            if method == "json_schema":
                title = json_schema.get("title", "answer")
                response_format = {
                    "type": "json_schema",
                    "json_schema": {"name": title, "schema": json_schema},
                }
            else:
                response_format = {"type": "json_object", **({"schema": json_schema} if json_schema else {})}
            llm = self.bind(response_format=response_format, **extra)  # type: ignore[attr-defined]
            parser = StructuredAnswerParser(answer_schema=schema)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=self.ls_provider,
            ls_model_name=str(kwargs.get("model") or self.model_id or ""),  # type: ignore[attr-defined]
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)  # type: ignore[attr-defined]
        if temperature is not None:
            params["ls_temperature"] = float(temperature)
        max_tokens = kwargs.get("max_tokens") or kwargs.get("max_new_tokens") or self.max_tokens  # type: ignore[attr-defined]
        if max_tokens:
            params["ls_max_tokens"] = int(max_tokens)
        stop = stop if stop is not None else self.stop  # type: ignore[attr-defined]
        if stop:
            params["ls_stop"] = [stop] if isinstance(stop, str) else list(stop)
        return params
