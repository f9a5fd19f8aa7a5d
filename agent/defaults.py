"""The loop's tunable values: each default and the one rule for what is accepted.

Kept apart from ``config.py`` (which builds agents, so it imports the loop) and ``loop.py`` (heavy
to import), so that both, and the CLI's help, read them without importing each other.
"""

from __future__ import annotations

from ragcoder.errors import ConfigError

DEFAULT_MAX_ATTEMPTS = 4  # rounds: 1 generation + up to 3 repair rounds
DEFAULT_SAMPLES = 4  # candidates per round; see docs/results.md for the measurement behind it
MAX_SAMPLES = 32  # the --samples bound: each candidate is a generation and a sandbox run
# Repairs are sampled (seeded), each round from the failing candidates closest to passing; a
# stuck temperature sets their temperature, none leaves them at the candidates' (Chen et al.
# 2021 sample at 0.8).
DEFAULT_STUCK_TEMPERATURE: float | None = None
MAX_STUCK_TEMPERATURE = 2.0  # beyond this, sampling is noise


def check_stuck_temperature(value: float | None, source: str = "the caller") -> float | None:
    """``value`` if it is None (repairs at the candidates' temperature) or in (0, MAX_STUCK_TEMPERATURE]; ConfigError otherwise.

    The settings (``config.RULES``) hold the same range: a value from a file, the environment or a
    flag is refused there, one passed to CodeAgent in code here.
    """
    if value is not None and not 0 < value <= MAX_STUCK_TEMPERATURE:
        raise ConfigError(
            f"stuck_temperature = {value} from {source}: use a value in (0, {MAX_STUCK_TEMPERATURE:g}], "
            "or none for the candidates' temperature"
        )
    return value
