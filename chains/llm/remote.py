"""The model behind a URL: any OpenAI-compatible server (``ragcoder serve``, vLLM, llama.cpp's
server, Ollama) through LangChain's own ``ChatOpenAI``.

Used wherever the local model is when ``llm_url`` is set: generation, repairs, streaming, batch
and evaluation runs (each thread or Ray actor sends its own requests; the server batches them).
What is added on top of the stock client:

- a URL without a path gets ``/v1``, as every one of those servers serves it there;
- the model name defaults to the first one the server lists (``GET /v1/models``), so a server
  that holds one model needs no ``--model``; asking it also fails fast on a wrong URL or a
  model the server does not list;
- greedy decoding by default (temperature 0) and usage in streams (``stream_options``);
- a server that does not answer, or answers with an error, raises :class:`ModelUnavailable`
  with one line naming the URL, instead of the client's stack of retries and tracebacks.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from ragcoder.chains.llm.row_seeds import RowSeededBatch

from ragcoder.errors import ConfigError, ModelUnavailable

API_KEY_ENV = "RAGCODER_LLM_API_KEY"  # servers on a private network usually take any key
DEFAULT_TIMEOUT_S = 600.0  # a 768-token answer from a 1.5B model on a busy CPU server takes minutes
DEFAULT_RETRIES = 2  # the openai client's own retries, with backoff, on connection errors and 5xx


def normalise_llm_url(url: str, source: str = "llm_url") -> str:
    """``http://host:port`` -> ``http://host:port/v1``; other paths are kept. ConfigError if not http(s)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"llm_url = {url!r} from {source} is not an http(s) URL: use e.g. http://127.0.0.1:8000/v1"
        )
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class RemoteChatModel(RowSeededBatch, ChatOpenAI):
    """``ChatOpenAI`` whose failures to reach the server are one-line :class:`ModelUnavailable`."""

    ragcoder_server: bool = False
    """The server is ``ragcoder serve``, which also takes ragcoder's own options (``prompt_lookup``)."""

    def for_repairs(self) -> Any:
        """The model repairs use: with prompt-lookup decoding where the server offers it, as the
        in-process model does (a repair copies the code it was shown; the same decoding gives the
        same verdicts in-process and through the URL)."""
        if not self.ragcoder_server:
            return self
        return self.bind(extra_body={"prompt_lookup": True})  # the server's own candidate length

    def _unavailable(self, exc: BaseException) -> ModelUnavailable:
        return ModelUnavailable(
            f"the model server at {self.openai_api_base} failed: {_one_line(exc)}",
            hint="check that the server runs and serves this model (llm_url, --model)",
        )

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        import openai

        try:
            return super()._generate(*args, **kwargs)
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        import openai

        try:
            yield from super()._stream(*args, **kwargs)
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        import openai

        try:
            return await super()._agenerate(*args, **kwargs)
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        import openai

        try:
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk
        except openai.APIError as exc:
            raise self._unavailable(exc) from exc


def served_models(url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> list[str]:
    """The model ids the server lists at ``GET {url}/models`` (ModelUnavailable if it does not answer)."""
    return list(_listing(url, api_key=api_key, timeout_s=timeout_s))


def _listing(url: str, *, api_key: str | None = None, timeout_s: float = 10.0) -> dict[str, str]:
    """Each listed model id with its ``owned_by``."""
    import openai

    client = openai.OpenAI(
        base_url=normalise_llm_url(url), api_key=api_key or _api_key(), timeout=timeout_s, max_retries=1
    )
    try:
        return {model.id: str(getattr(model, "owned_by", "")) for model in client.models.list()}
    except openai.APIError as exc:
        raise ModelUnavailable(
            f"the model server at {normalise_llm_url(url)} does not answer: {_one_line(exc)}",
            hint="start it (e.g. `ragcoder serve`, vLLM, llama.cpp's server, Ollama) or fix llm_url",
        ) from exc
    finally:
        client.close()


def _api_key() -> str:
    return os.environ.get(API_KEY_ENV) or "unused"


def load_remote_chat_model(
    url: str,
    *,
    model: str | None = None,
    api_key: str | None = None,
    max_new_tokens: int = 512,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_retries: int = DEFAULT_RETRIES,
) -> RemoteChatModel:
    """A chat model served at ``url`` (greedy; ``bind(temperature=..., seed=...)`` samples).

    ``model=None`` takes the first model the server lists; either way the server is asked once
    now, so a wrong URL fails here rather than at the first task. ``api_key`` defaults to
    ``$RAGCODER_LLM_API_KEY``, else "unused" (what local servers accept).
    """
    base = normalise_llm_url(url)
    owners = _listing(base, api_key=api_key)
    listed = list(owners)
    name = model or (listed[0] if listed else None)
    if not name:
        raise ModelUnavailable(f"the model server at {base} lists no model", hint="pass --model NAME")
    if listed and name not in listed:  # fail now, not with a 404 at the first task
        raise ModelUnavailable(
            f"the model server at {base} does not serve {name!r}; it serves {', '.join(listed[:10])}",
            hint="pass --model with one of those, or leave --model out to use the first",
        )
    return RemoteChatModel(
        base_url=base,
        api_key=api_key or _api_key(),  # type: ignore[arg-type]
        model=name,
        temperature=0.0,
        max_tokens=max_new_tokens,  # type: ignore[call-arg]
        stream_usage=True,
        timeout=timeout_s,
        max_retries=max_retries,
        ragcoder_server=owners.get(name) == "ragcoder",
    )
