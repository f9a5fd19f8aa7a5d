"""The langchain-tests standard chat model suites, run against ``LocalChatModel``.

- unit suite: on the tiny random model (its output does not matter there);
- integration suite: on SmolLM2-135M (slow: a real model, about N min on 2 cores), and on the real
  default model, Qwen2.5-Coder-1.5B int8 (slow, heavy: see ``TestQwenChatModelIntegration``).

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

import os
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


# Tests that need a model trained to call tools and answer in JSON: they run on Qwen2.5 only, and
# everything else on SmolLM2 only, so each test runs once, on a model that can pass it, and CI's
# Qwen pass stays short.
NEEDS_TOOL_TRAINING = (
    "test_tool_calling",
    "test_tool_choice",
    "test_bind_runnables_as_tools",
    "test_structured_output",
    "test_json_mode",
    "test_agent_loop",
    "test_unicode_tool_call_integration",
)


def _needs_tool_training(request: pytest.FixtureRequest) -> bool:
    return request.node.originalname.startswith(NEEDS_TOOL_TRAINING)


@pytest.mark.slow
class TestLocalChatModelIntegration(_LocalChatModelFeatures, ChatModelIntegrationTests):
    """SmolLM2-135M-Instruct, fp32. Its chat template renders no tools, so tool calls and results go
    through the fallback format (the same ``<tool_call>`` blocks, written into the messages): the
    history tests run here; choosing and writing calls runs on Qwen."""

    @pytest.fixture(autouse=True)
    def _leave_tool_choices_to_qwen(self, request: pytest.FixtureRequest) -> None:
        if _needs_tool_training(request):
            pytest.skip("SmolLM2-135M was not trained to call tools or answer in JSON: runs on Qwen2.5 below")

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params(load_chat_model("smollm2-135m-instruct", max_new_tokens=100))


@pytest.mark.slow
class TestQwenChatModelIntegration(_LocalChatModelFeatures, ChatModelIntegrationTests):
    """The real default model, Qwen2.5-Coder-1.5B-Instruct int8 (its template renders tools): the
    tool-calling and structured-output tests. The rest run on SmolLM2 above, which keeps this pass
    to a few minutes in CI (the full suite here: see docs/benchmarks.md)."""

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _qwen(cls, qwen_chat: LocalChatModel) -> None:
        cls.qwen = qwen_chat

    @pytest.fixture(autouse=True)
    def _only_tool_choices(self, request: pytest.FixtureRequest) -> None:
        if not _needs_tool_training(request) and not os.environ.get("RAGCODER_QWEN_FULL_SUITE"):
            pytest.skip("runs on SmolLM2 above (RAGCODER_QWEN_FULL_SUITE=1 runs it here too)")

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**_params(type(self).qwen), "max_tokens": 100}
