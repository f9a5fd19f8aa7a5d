"""Tool calling and structured output of the local chat model, without a real model.

The prompt side runs on real tokenizers: the SmolLM2 one with its own template (no tools: the
fallback format) and with Qwen2.5's template (renders tools itself). The reply side is fed scripted
answers through an engine that returns them; settings that reach generation (``max_tokens``,
``temperature``, ``stop``) run the tiny random model. Real models: test_chat_model_standard.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import GenerationChunk
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field
from ragcoder.chains.llm.chat_model import LocalChatModel, LocalPipelineLLM, load_chat_model
from ragcoder.chains.llm.generate import GenerationOutput
from ragcoder.chains.llm.tool_calls import ReplyParser, chat_turn, chunk_of, template_supports_tools
from typing_extensions import TypedDict

from ragcoder.errors import ChatInputError

# Qwen2.5-Instruct's chat template as the model ships it (Apache-2.0): the real default model
# renders tools with exactly this.
QWEN25_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}}\\n</tool_call><|im_end|>\\n" }}\n{%- else %}\n'
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n            {{- tool_call.name }}\n'
    '            {{- \'", "arguments": \' }}\n            {{- tool_call.arguments | tojson }}\n'
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def greet(name: str) -> str:
    """Greet someone by name."""
    return f"hello {name}"


TOOLS = [convert_to_openai_tool(add), convert_to_openai_tool(greet)]
HISTORY = [
    HumanMessage("What is 1 + 2? Then greet 你好."),
    AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}]),
    ToolMessage('{"result": 3}', tool_call_id="c1", name="add"),
]


@pytest.fixture(scope="module")
def chatml_tokenizer(model_tiny_dir: Path) -> Any:
    """SmolLM2's tokenizer and template: ChatML, no tools."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_tiny_dir)


@pytest.fixture(scope="module")
def qwen_tokenizer(model_tiny_dir: Path) -> Any:
    """The same ChatML tokens with Qwen2.5's template, which renders tools."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_tiny_dir)
    tokenizer.chat_template = QWEN25_TEMPLATE
    return tokenizer


# -- the prompt -----------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["qwen", "chatml"])
def test_tools_calls_and_results_reach_the_prompt(template: str, request: pytest.FixtureRequest) -> None:
    tokenizer = request.getfixturevalue(f"{template}_tokenizer")
    assert template_supports_tools(tokenizer) == (template == "qwen")
    prompt = chat_turn(tokenizer, HISTORY, tools=TOOLS).prompt
    listing = prompt.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line)["function"]["name"] for line in listing.strip().splitlines()] == ["add", "greet"]
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>' in prompt
    assert '<|im_start|>user\n<tool_response>\n{"result": 3}\n</tool_response><|im_end|>' in prompt
    assert "你好" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert prompt.count("<|im_start|>system") == 1


def test_a_system_message_keeps_its_text_above_the_tools(chatml_tokenizer: Any) -> None:
    prompt = chat_turn(chatml_tokenizer, [SystemMessage("Be terse."), *HISTORY], tools=TOOLS).prompt
    assert prompt.startswith("<|im_start|>system\nBe terse.\n\n# Tools\n")


def test_tool_choice_is_written_into_the_answer(qwen_tokenizer: Any) -> None:
    def turn(choice: Any, tools: list = TOOLS) -> Any:
        return chat_turn(qwen_tokenizer, [HumanMessage("hi")], tools=tools, tool_choice=choice)

    assert turn("greet").prefill == '<tool_call>\n{"name": "greet", "arguments":'
    assert turn({"type": "function", "function": {"name": "add"}}).prefill.endswith('"add", "arguments":')
    assert turn("any").prefill == '<tool_call>\n{"name":'
    assert turn("required", TOOLS[:1]).prefill == '<tool_call>\n{"name": "add", "arguments":'
    assert turn("auto").prefill == "" and turn("auto").tool_names == ("add", "greet")
    none = turn("none")
    assert none.prefill == "" and none.tool_names is None and "<tools>" not in none.prompt


def test_bad_tool_choices_and_media_fail_with_one_clear_line(qwen_tokenizer: Any) -> None:
    with pytest.raises(ChatInputError, match="tool_choice 'multiply' names no bound tool"):
        chat_turn(qwen_tokenizer, [HumanMessage("hi")], tools=TOOLS, tool_choice="multiply")
    image = HumanMessage(
        [{"type": "text", "text": "what is this?"}, {"type": "image", "url": "http://x/y.png"}]
    )
    with pytest.raises(
        ChatInputError, match="message 0 has a 'image' block; the local chat model reads text only"
    ):
        chat_turn(qwen_tokenizer, [image])
    with pytest.raises(ChatInputError, match="no messages"):
        chat_turn(qwen_tokenizer, [])


def test_a_json_answer_gets_its_schema_and_an_opening_brace(qwen_tokenizer: Any) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    turn = chat_turn(
        qwen_tokenizer,
        [HumanMessage("give x")],
        response_format={"type": "json_schema", "json_schema": {"name": "X", "schema": schema}},
    )
    assert json.dumps(schema) in turn.prompt and turn.prefill == "{"
    assert (
        "Reply with one JSON object"
        in chat_turn(qwen_tokenizer, [HumanMessage("give x")], response_format={"type": "json_object"}).prompt
    )


# -- the reply ------------------------------------------------------------------------------------

REPLY = (
    "Let me work it out.\n"
    '<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>\n'
    '<tool_call>\n{"name": "greet", "arguments": "{\\"name\\": \\"你好\\"}"}\n</tool_call>'
)


def _streamed(text: str, step: int, reads_tools: bool = True) -> AIMessage:
    parser, total = ReplyParser(reads_tools=reads_tools), None
    pieces = [p for i in range(0, len(text), step) for p in parser.feed(text[i : i + step])] + parser.flush()
    for piece in pieces:
        total = chunk_of(piece) if total is None else total + chunk_of(piece)
    return total


def test_tool_call_blocks_become_tool_calls_and_the_rest_stays_content(qwen_tokenizer: Any) -> None:
    turn = chat_turn(qwen_tokenizer, [HumanMessage("hi")], tools=TOOLS)
    message = turn.message(REPLY)
    assert message.content == "Let me work it out."
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("add", {"a": 3, "b": 4}),
        ("greet", {"name": "你好"}),
    ]
    assert len({c["id"] for c in message.tool_calls}) == 2 and not message.invalid_tool_calls
    assert [b["type"] for b in message.content_blocks] == ["text", "tool_call", "tool_call"]


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_streamed_pieces_add_up_to_the_same_calls_wherever_the_tags_split(step: int) -> None:
    total = _streamed(REPLY, step)
    assert total.content.strip() == "Let me work it out."
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [
        ("add", {"a": 3, "b": 4}),
        ("greet", {"name": "你好"}),
    ]


def test_sloppy_calls_are_read_and_broken_ones_are_never_executed(qwen_tokenizer: Any) -> None:
    turn = chat_turn(qwen_tokenizer, [HumanMessage("hi")], tools=TOOLS)
    # the outer object's last brace dropped, and an unclosed block at the end: both read
    message = turn.message(
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}\n</tool_call><tool_call>{"name": "greet"}'
    )
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 1, "b": 2}), ("greet", {})]
    broken = '<tool_call>\n{"name": "add", "arguments": {"a": 1,, }}\n</tool_call>'
    message = turn.message(broken)
    assert message.tool_calls == []
    [invalid] = message.invalid_tool_calls
    assert invalid["error"] == "the tool call is not valid JSON" and '"a": 1,,' in invalid["args"]
    streamed = _streamed(broken, 5)
    assert streamed.tool_calls == [] and streamed.content == broken  # shown as text, never run
    assert (
        turn.message('<tool_call>{"arguments": {}}</tool_call>')
        .invalid_tool_calls[0]["error"]
        .startswith("a tool call needs")
    )


FENCED = '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```\nThat adds them.'
PYTHONIC = '{"name": "greet", "arguments": {"name": """Ada\nLovelace""", "title": null}}'


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_calls_written_without_tags_are_read_when_they_name_a_bound_tool(step: int) -> None:
    def read(text: str) -> AIMessage:
        parser = ReplyParser(tool_names=("add", "greet"))
        pieces = [
            p for i in range(0, len(text), step) for p in parser.feed(text[i : i + step])
        ] + parser.flush()
        return sum((chunk_of(p) for p in pieces[1:]), chunk_of(pieces[0]))

    fenced = read(FENCED)
    assert [(c["name"], c["args"]) for c in fenced.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert fenced.content == "That adds them."
    # a code argument as a Python triple-quoted string, null for None: read as the model meant it
    assert read(PYTHONIC).tool_calls[0]["args"] == {"name": "Ada\nLovelace", "title": None}
    for text in [
        '{"name": "multiply", "arguments": {}}',
        '{"answer": 42}',
        "```python\nprint(1)\n```",
        "[1, 2]",
    ]:
        message = read(text)
        assert message.content == text and message.tool_calls == []


def test_without_tools_a_tool_call_tag_is_just_text() -> None:
    assert _streamed(REPLY, 3, reads_tools=False).content == REPLY


# -- the chat model, with an engine that answers from a script ------------------------------------


class ScriptedEngine(LocalPipelineLLM):
    """Answers each prompt with the next scripted reply, in pieces when streaming; keeps the prompts."""

    replies: list[str] = Field(default_factory=list)
    prompts: list[str] = Field(default_factory=list)

    def generate_texts(self, prompts: Any, stop: Any = None, **kwargs: Any) -> list[GenerationOutput]:
        self.prompts += list(prompts)
        return [GenerationOutput(self.replies.pop(0), 10, 5, "stop") for _ in prompts]

    def _stream(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator:
        self.prompts.append(prompt)
        text = self.replies.pop(0)
        for i in range(0, len(text), 4):
            yield GenerationChunk(text=text[i : i + 4])
        yield GenerationChunk(text="", generation_info=GenerationOutput("", 10, 5, "stop").info())


@pytest.fixture
def scripted(model_tiny_chat: LocalChatModel, qwen_tokenizer: Any) -> LocalChatModel:
    engine = ScriptedEngine(pipeline=model_tiny_chat.llm.pipeline, model_id="scripted")
    return LocalChatModel(llm=engine, tokenizer=qwen_tokenizer, model_id="scripted")


def test_bound_tools_reach_the_engine_and_answers_come_back_as_tool_calls(scripted: LocalChatModel) -> None:
    call = ' {"a": 3, "b": 4}}\n</tool_call>'
    scripted.llm.replies = [call, call, call, call]
    model = scripted.bind_tools([add, greet], tool_choice="add")
    invoked = model.invoke("what is 3 + 4?")
    streamed = list(model.stream("what is 3 + 4?"))
    batched = model.batch(["what is 3 + 4?", "and 3 + 4?"])
    for message in [invoked, sum(streamed[1:], streamed[0]), *batched]:
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [("add", {"a": 3, "b": 4})]
    assert streamed[-1].chunk_position == "last" and streamed[-1].usage_metadata["output_tokens"] == 5
    assert all(
        '"name": "greet"' in p and p.endswith('<tool_call>\n{"name": "add", "arguments":')
        for p in scripted.llm.prompts
    )


def test_a_tool_result_in_the_history_is_answered(scripted: LocalChatModel) -> None:
    scripted.llm.replies = ["1 + 2 = 3."]
    answer = scripted.bind_tools([add]).invoke(HISTORY)  # a ToolMessage last: refused before
    assert answer.content == "1 + 2 = 3." and answer.tool_calls == []
    assert '<tool_response>\n{"result": 3}\n</tool_response>' in scripted.llm.prompts[0]


def test_create_agent_runs_a_tool_and_reads_its_result(scripted: LocalChatModel) -> None:
    from langchain.agents import create_agent

    scripted.llm.replies = [
        '<tool_call>\n{"name": "add", "arguments": {"a": 20, "b": 22}}\n</tool_call>',
        "It is 42.",
    ]
    state = create_agent(scripted, tools=[add]).invoke(
        {"messages": [{"role": "user", "content": "20 + 22?"}]}
    )
    assert [type(m).__name__ for m in state["messages"]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert state["messages"][2].content == "42" and state["messages"][-1].content == "It is 42."
    assert "<tool_response>\n42\n</tool_response>" in scripted.llm.prompts[1]


class Joke(BaseModel):
    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


class JokeDict(TypedDict):
    setup: Annotated[str, ..., "question to set up a joke"]
    punchline: Annotated[str, ..., "answer to resolve the joke"]


JOKE = {"setup": "Why do cats sit on keyboards?", "punchline": "To keep an eye on the mouse."}


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
@pytest.mark.parametrize(
    "schema", [Joke, JokeDict, Joke.model_json_schema()], ids=["pydantic", "typeddict", "dict"]
)
def test_structured_output_is_parsed_and_validated(
    scripted: LocalChatModel, method: str, schema: Any
) -> None:
    # what the model writes after the prefill: the arguments object, or the JSON after its "{"
    body = (
        " " + json.dumps(JOKE) + "}\n</tool_call>" if method == "function_calling" else json.dumps(JOKE)[1:]
    )
    scripted.llm.replies = [body, body, "no joke today", "no joke today"]
    structured = scripted.with_structured_output(schema, method=method)
    expected = Joke(**JOKE) if schema is Joke else JOKE
    assert structured.invoke("a cat joke") == expected
    assert list(structured.stream("a cat joke")) == [expected]  # only an answer that validates
    raw = scripted.with_structured_output(schema, method=method, include_raw=True).invoke("a cat joke")
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)
    with pytest.raises(OutputParserException, match="does not fit the schema"):
        structured.invoke("a cat joke")
    if method != "function_calling":
        assert "punchline" in scripted.llm.prompts[0] and scripted.llm.prompts[0].endswith(
            "<|im_start|>assistant\n{"
        )


def test_an_answer_missing_a_required_field_is_refused(scripted: LocalChatModel) -> None:
    scripted.llm.replies = ['"setup": "only a setup"}']
    with pytest.raises(OutputParserException, match="punchline"):
        scripted.with_structured_output(JokeDict, method="json_schema").invoke("a cat joke")


def test_standard_tracing_params_name_the_model_and_its_settings(scripted: LocalChatModel) -> None:
    model = LocalChatModel(
        llm=scripted.llm, tokenizer=scripted.tokenizer, temperature=0.5, max_tokens=9, stop=["END"]
    )
    assert model._get_ls_params() == {
        "ls_provider": "huggingface",
        "ls_model_name": "scripted",
        "ls_model_type": "chat",
        "ls_temperature": 0.5,
        "ls_max_tokens": 9,
        "ls_stop": ["END"],
    }
    assert model._get_ls_params(stop=["x"], max_tokens=3)["ls_stop"] == ["x"]


# -- model-level settings reach generation (the tiny random model) --------------------------------


def _tiny(model_tiny_chat: LocalChatModel, **fields: Any) -> LocalChatModel:
    return LocalChatModel(llm=model_tiny_chat.llm, tokenizer=model_tiny_chat.tokenizer, **fields)


def test_model_level_max_tokens_is_honoured(model_tiny_chat: LocalChatModel) -> None:
    three = _tiny(model_tiny_chat, max_tokens=3)
    assert three.invoke("write a long story").usage_metadata["output_tokens"] <= 3
    chunks = list(three.stream("write a long story"))
    assert sum(chunks[1:], chunks[0]).usage_metadata["output_tokens"] <= 3
    assert (
        model_tiny_chat.bind(max_tokens=3).invoke("write a long story").usage_metadata["output_tokens"] <= 3
    )
    assert model_tiny_chat.invoke("write a long story").usage_metadata["output_tokens"] > 3


def test_model_level_temperature_and_stop_are_honoured(model_tiny_chat: LocalChatModel) -> None:
    greedy = model_tiny_chat.invoke("write a long story").content
    sampled = _tiny(model_tiny_chat, temperature=1.5, seed=7)
    first = sampled.invoke("write a long story").content
    assert first == sampled.invoke("write a long story").content != greedy
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
    assert _tiny(model_tiny_chat, stop=[stop]).invoke("write a long story").content == greedy.split(stop)[0]


def test_a_model_without_tools_in_its_template_still_calls_tools(model_tiny_dir: Path) -> None:
    chat = load_chat_model(str(model_tiny_dir), quantize="none", max_new_tokens=8)
    answer = chat.bind_tools([add], tool_choice="add").invoke([*HISTORY, HumanMessage("and 5 + 6?")])
    # the random model writes garbage after the prefilled call: read as an invalid call, never run
    assert answer.tool_calls == [] or answer.tool_calls[0]["name"] == "add"
    assert len(answer.tool_calls) + len(answer.invalid_tool_calls) == 1


# What Qwen2.5-Coder-1.5B int8 wrote after the forced call's prefill in the standard suite's streamed
# test_structured_output[typeddict] and [json_schema] (the CI failures "Stream returned no chunks"):
# the closing braces before the string's closing quote. The invoke before it had them in order.
BRACES_BEFORE_QUOTE = (
    ' {"setup": "Why did the cat cross the road?", "punchline": "To get to the other side!}}"\n</tool_call>'
)


@pytest.mark.parametrize(
    "schema", [Joke, JokeDict, Joke.model_json_schema()], ids=["pydantic", "typeddict", "dict"]
)
def test_braces_written_before_the_closing_quote_are_read_as_meant(
    scripted: LocalChatModel, schema: Any
) -> None:
    scripted.llm.replies = [BRACES_BEFORE_QUOTE, BRACES_BEFORE_QUOTE]
    structured = scripted.with_structured_output(schema)
    meant = {"setup": "Why did the cat cross the road?", "punchline": "To get to the other side!"}
    expected = Joke(**meant) if schema is Joke else meant
    assert structured.invoke("a cat joke") == expected
    assert list(structured.stream("a cat joke")) == [expected]


def test_json_is_read_as_meant_but_never_completed_past_a_cut() -> None:
    from ragcoder.chains.llm.json_reading import read_json

    assert read_json('{"a": {"b": "end!}}"') == {"a": {"b": "end!"}}  # braces before the quote
    assert read_json('{"a": {"b": 2}') == {"a": {"b": 2}}  # the last brace dropped
    assert read_json('{"code": "x = {1: 2}"') == {"code": "x = {1: 2}"}  # braces of the string stay
    assert read_json('{"code": """\n    print(1)\n"""}') == {"code": "\n    print(1)\n"}
    assert read_json('{"xs": [1, 2]') == {"xs": [1, 2]}
    for cut in ['{"xs": [1, 2', '{"code": "print(1', '{"a": 1,', '{"a": tru']:  # cut off: not guessed
        with pytest.raises(ValueError):
            read_json(cut)
