"""ragcoder's agent: the generate -> run -> check -> repair loop and its surfaces.

    from ragcoder.agent import AgentConfig, build_agent
    with build_agent(AgentConfig()) as agent:
        result = agent.invoke("Write is_prime(n) ...")
        print(result.code, result.passed)

Names are imported lazily so that `ragcoder --help` starts instantly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgentConfig": "ragcoder.agent.config",
    "build_agent": "ragcoder.agent.config",
    "AgentEvent": "ragcoder.agent.loop",
    "CodeAgent": "ragcoder.agent.loop",
    "AgentResult": "ragcoder.agent.result",
    "Attempt": "ragcoder.agent.result",
    "Task": "ragcoder.agent.tasks",
    "TaskError": "ragcoder.agent.tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
