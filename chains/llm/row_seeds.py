"""Seeded batches through a server: input ``i`` of ``batch(..., seed=s)`` is asked with ``seed=s + i``.

The local engines sample row ``i`` of a batch from a generator seeded ``s + i``
(:class:`ragcoder.chains.llm.generate.Sampling`). A model behind a URL gets one request per input,
each with one seed; sending the same seed with each would sample identical prompts identically
(eight copies of one candidate). With ``s + i`` the served rows are the rows a local batch draws.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list, get_executor_for_config


class RowSeededBatch:
    """Mixin for a chat model (before it in the bases): ``batch``/``abatch`` give each input its seed."""

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        seed = kwargs.get("seed")
        if seed is None or len(inputs) < 2:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)  # type: ignore[misc]
        configs = get_config_list(config, len(inputs))

        def one(index: int) -> Any:
            try:
                return self.invoke(inputs[index], configs[index], **{**kwargs, "seed": int(seed) + index})  # type: ignore[attr-defined]
            except Exception as error:
                if return_exceptions:
                    return error
                raise

        with get_executor_for_config(configs[0]) as executor:
            return list(executor.map(one, range(len(inputs))))

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        seed = kwargs.get("seed")
        if seed is None or len(inputs) < 2:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)  # type: ignore[misc]
        configs = get_config_list(config, len(inputs))
        calls = [
            self.ainvoke(item, configs[index], **{**kwargs, "seed": int(seed) + index})  # type: ignore[attr-defined]
            for index, item in enumerate(inputs)
        ]
        return list(await asyncio.gather(*calls, return_exceptions=return_exceptions))
