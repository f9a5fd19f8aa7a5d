"""One default and one rule per loop setting, whether the value comes from a config file, an
environment variable, a flag or a library caller building CodeAgent directly."""

from __future__ import annotations

import pytest
from ragcoder.agent.config import AgentConfig, resolve_config
from ragcoder.agent.defaults import DEFAULT_MAX_ATTEMPTS, check_stuck_temperature
from ragcoder.agent.loop import CodeAgent

from ragcoder.errors import ConfigError
from tests.fakes import scripted


@pytest.mark.parametrize("bad", [0.0, -1.0, 2.5, float("inf"), float("nan")])
def test_stuck_temperature_has_one_rule_for_config_and_agent(bad: float, trusted_sandbox) -> None:
    with pytest.raises(ConfigError, match="stuck_temperature"):
        resolve_config({"stuck_temperature": str(bad)})
    with pytest.raises(ConfigError, match="stuck_temperature"):
        CodeAgent(scripted([("", "x")]), trusted_sandbox, stuck_temperature=bad)
    with pytest.raises(ValueError):  # still a ValueError for callers that catch that
        check_stuck_temperature(bad)


@pytest.mark.parametrize("good", [None, 0.01, 0.8, 2.0])
def test_stuck_temperature_in_range_is_kept(good: float | None, trusted_sandbox) -> None:
    assert check_stuck_temperature(good) == good
    assert CodeAgent(scripted([("", "x")]), trusted_sandbox, stuck_temperature=good).stuck_temperature == good


def test_attempts_default_is_the_same_everywhere(trusted_sandbox) -> None:
    from click.testing import CliRunner

    from ragcoder.cli.app import cli

    assert AgentConfig().max_attempts == DEFAULT_MAX_ATTEMPTS
    assert CodeAgent(scripted([("", "x")]), trusted_sandbox).max_attempts == DEFAULT_MAX_ATTEMPTS
    for command in (["solve"], ["batch"], ["eval", "humaneval"]):
        help_text = CliRunner().invoke(cli, [*command, "--help"]).output
        assert f"[default: {DEFAULT_MAX_ATTEMPTS}]" in " ".join(help_text.split())
