"""langchain-tests' standard chat-model suites run against the ONNX Runtime chat model (tiny model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from ragcoder.chains.llm.ort_chat import OrtChatModel

from tests.engine_helpers import build_onnx_folder, make_tiny_onnx_source

# pytest-asyncio's strict mode: the suites' coroutine tests need the asyncio mark and the standard
# tests may not be overridden, so the mark is module-wide (as in test_retrieval_standard.py)
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings(
        "ignore:The test <Function test_.*is marked with '@pytest.mark.asyncio':pytest.PytestWarning"
    ),
]

_FOLDER: list[Path] = []


def _tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _FOLDER:
        source = make_tiny_onnx_source(tmp_path_factory.mktemp("standard") / "tiny")
        _FOLDER.append(build_onnx_folder(source, source.parent / "tiny-onnx"))
    return _FOLDER[0]


@pytest.fixture(scope="module", autouse=True)
def _tiny_generator(tmp_path_factory: pytest.TempPathFactory) -> None:
    from ragcoder.chains.llm.ort_chat import load_generator

    _PARAMS["generator"] = load_generator(_tiny_onnx(tmp_path_factory))


_PARAMS: dict = {"model_id": "tiny-onnx", "max_new_tokens": 16}


class TestOrtChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[OrtChatModel]:
        return OrtChatModel

    @property
    def chat_model_params(self) -> dict:
        return dict(_PARAMS)


class TestOrtChatModelIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[OrtChatModel]:
        return OrtChatModel

    @property
    def chat_model_params(self) -> dict:
        return dict(_PARAMS)

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False
