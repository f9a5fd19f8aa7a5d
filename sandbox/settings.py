"""Limits and knobs shared by the server-based backends, with sane defaults."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import Any

from ragcoder.sandbox.base import DEFAULT_OUTPUT_LIMIT, DEFAULT_TIMEOUT_S

from ragcoder.errors import ConfigError

DEFAULT_IMAGE = "ragcoder-sandbox:latest"
SANDBOX_UID = 10001
LABEL = "ragcoder"  # every container we start carries ragcoder=1


@dataclass(frozen=True)
class SandboxSettings:
    """Every limit a sandbox applies. Sizes accept docker-style strings ("512m", "1g") or bytes."""

    image: str = DEFAULT_IMAGE  # docker backend only
    pool_size: int = 2  # warm servers kept ready (2 cores here: 2 parallel runs)
    timeout_s: float = DEFAULT_TIMEOUT_S  # per run wall clock, unless run(timeout=...) says otherwise
    max_timeout_s: float = 300.0  # no run may ask for more (run(timeout=...) above it is refused)
    grace_s: float = 3.0  # extra host-side wait before the whole server is presumed hung
    mem_limit: str | int = "512m"  # memory = memory+swap: no swap escape
    pids_limit: int = 64  # fork bombs stop here
    cpus: float = 1.0  # CPU quota (cores)
    # cgroup v1 weight of the container's CPU group against the host's other groups. Docker's 1024
    # makes a container one task among many on a loaded host, so its runs slow down with the load;
    # the quota above still caps a CPU burner at `cpus` cores.
    cpu_shares: int = 8192
    tmp_size: str | int = "64m"  # tmpfs /tmp (counts against memory)
    work_size: str | int = "64m"  # tmpfs /work (counts against memory; bounds "fill the disk")
    shm_size: str | int = "16m"
    output_limit: int = DEFAULT_OUTPUT_LIMIT  # bytes kept of stdout and of stderr, each
    # Files the code writes under /work come back (new or changed ones), within these caps; a file
    # over a cap is listed in ExecResult.files_skipped instead. They travel base64 over the server
    # channel and sit in the /work tmpfs (work_size) first.
    max_file_bytes: int = 16 << 20  # total bytes of files returned by one run
    max_one_file_bytes: int = 8 << 20  # bytes of any one returned file
    max_files: int = 50
    start_timeout_s: float = 30.0  # a server must say hello within this
    # Cleaning up after a run (kill leftovers, wipe /work, /tmp, /dev/shm, remove IPC objects) must
    # fit in this, else the worker is replaced: a run's mess never costs the next run time.
    cleanup_budget_s: float = 0.5
    seccomp: bool = True  # load the sandbox's seccomp filter (sandbox/seccomp.py) in docker and local

    def __post_init__(self) -> None:
        for name in ("timeout_s", "max_timeout_s", "grace_s", "start_timeout_s", "cleanup_budget_s", "cpus"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"sandbox setting {name} must be a finite number, got {value!r}")
            if value < 0 or (value == 0 and name != "grace_s"):  # no grace is allowed
                raise ConfigError(f"sandbox setting {name} must be more than 0, got {value!r}")
        if self.timeout_s > self.max_timeout_s:
            raise ConfigError(
                f"sandbox setting timeout_s ({self.timeout_s:g} s) is over max_timeout_s ({self.max_timeout_s:g} s)"
            )
        for name in ("pool_size", "pids_limit", "output_limit", "max_file_bytes", "max_files"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"sandbox setting {name} must be a whole number of at least 1, got {value!r}"
                )

    def check_timeout(self, timeout: object) -> float:
        """A run's timeout in seconds: ``timeout`` (None: ``timeout_s``) if it is a finite number
        above 0 and at most ``max_timeout_s``; else ConfigError naming the bound."""
        value = self.timeout_s if timeout is None else timeout
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"timeout must be a number of seconds, got {value!r}", hint=self._timeout_hint()
            )
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"timeout must be a finite number of seconds above 0, got {value!r}",
                hint=self._timeout_hint(),
            )
        if value > self.max_timeout_s:
            raise ConfigError(
                f"timeout {value:g} s is over this sandbox's maximum of {self.max_timeout_s:g} s",
                hint=self._timeout_hint(),
            )
        return float(value)

    def _timeout_hint(self) -> str:
        return f"pass a timeout between 0 and {self.max_timeout_s:g} seconds (setting max_timeout_s)"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SandboxSettings:
        """Build from keyword arguments, rejecting unknown names with a one-line message."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"unknown sandbox setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**kwargs)

    def server_config(self, **backend: Any) -> dict[str, Any]:
        """The run server's config (its argv JSON): the limits it applies itself, plus ``backend``'s."""
        return {
            "max_file_bytes": self.max_file_bytes,
            "max_files": self.max_files,
            "max_one_file_bytes": self.max_one_file_bytes,
            "max_timeout_s": self.max_timeout_s,
            "cleanup_budget_s": self.cleanup_budget_s,
            **backend,
        }

    @property
    def mem_bytes(self) -> int:
        return parse_size(self.mem_limit)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(size: str | int) -> int:
    """ "512m" -> 536870912; ints pass through."""
    if isinstance(size, int):
        return size
    m = _SIZE_RE.match(size)
    if not m:
        raise ValueError(f"not a size: {size!r} (use e.g. 512m, 1g or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
