"""The langchain-tests standard chat model suites, run against ``LocalChatModel``.

- unit suite: on the tiny random model (its output does not matter there);
- integration suite: on the real default model, Qwen2.5-Coder-1.5B int8 (slow; the time and counts
  are in docs/benchmarks.md). A template without tools (SmolLM2's) is covered by test_tool_calls.py.

Skips, each a feature a local text model does not have (langchain-tests skips them itself from the
properties below, since the standard tests may not be overridden):

- images, audio, PDFs in messages or tool results: the models read text only;
- a per-call ``model=`` override: a chat model wraps the weights it loaded; pick another model
  with ``load_chat_model(spec)``;
- ``test_stream_time``: a VCR benchmark of HTTP calls, and no HTTP is involved;
- unit ``test_init_from_env``: the chat model takes its model as an argument; the environment
  (``RAGCODER_MODEL``) is read one layer up, by ``ragcoder.agent``'s config;
- unit ``test_serdes``: it holds loaded weights (a transformers pipeline), which LangChain's
  serializer cannot write.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from ragcoder.chains.llm.chat_model import LocalChatModel, load_chat_model

# pytest-asyncio runs in strict mode: the suites' coroutine tests need the asyncio mark, and the
# standard tests may not be overridden, so the mark is module-wide; the sync tests then draw a
# "marked with asyncio but not an async function" warning, which is ignored here and only here.
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings(
        "ignore:The test <Function test_.*is marked with '@pytest.mark.asyncio':pytest.PytestWarning"
    ),
]


def _params(chat: LocalChatModel) -> dict[str, Any]:
    """Constructor arguments for a new chat model on ``chat``'s loaded weights."""
    return {"llm": chat.llm, "tokenizer": chat.tokenizer, "model_id": chat.model_id}


class _LocalChatModelFeatures:
    """What the local chat models support, for both suites."""

    @property
    def chat_model_class(self) -> type[LocalChatModel]:
        return LocalChatModel

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True  # tool_use and thinking blocks in history; Anthropic-format tools

    @property
    def supports_model_override(self) -> bool:
        return False  # one chat model, one set of loaded weights


class TestLocalChatModelUnit(_LocalChatModelFeatures, ChatModelUnitTests):
    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _tiny_model(cls, model_tiny_dir) -> None:
        cls.tiny_dir = model_tiny_dir

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params(load_chat_model(str(type(self).tiny_dir), quantize="none", max_new_tokens=24))


@pytest.mark.slow
class TestQwenChatModelIntegration(_LocalChatModelFeatures, ChatModelIntegrationTests):
    """The whole integration suite on the real default model, Qwen2.5-Coder-1.5B-Instruct int8 (its
    chat template renders tools): the model users get, so every test runs where it counts."""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _qwen(cls, qwen_chat: LocalChatModel) -> None:
        cls.qwen = qwen_chat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**_params(type(self).qwen), "max_tokens": 100}
