"""Shared by the red-team files: hostile programs as data, and the health check after each.

Each hostile program prints markers that say what it managed (``BLOCKED n`` for a refused
attempt, ``ESCAPED n`` when one went through); its ``check`` asserts on the result. After each,
``assert_healthy`` runs a normal program on the same sandbox: it must work and start clean (no
process left but the server and itself, empty /work, /tmp and /dev/shm, no SysV or POSIX IPC
object, uid 10001, no state in builtins).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from ragcoder.sandbox import ExecResult, Sandbox

SECRET = "rt-secret-9f1c2b"
os.environ["RAGCODER_REDTEAM_SECRET"] = SECRET  # set before any sandbox opens: must never be visible


@dataclass(frozen=True)
class Hostile:
    id: str
    code: str
    check: Callable[[ExecResult], object]
    timeout: float = 5.0


def blocked(result: ExecResult) -> None:
    """The program printed BLOCKED for each attempt and never ESCAPED."""
    assert "ESCAPED" not in result.stdout, result
    assert "BLOCKED" in result.stdout, result


def all_blocked(n: int) -> Callable[[ExecResult], None]:
    def check(result: ExecResult) -> None:
        assert "ESCAPED" not in result.stdout, result
        assert result.stdout.count("BLOCKED") == n, result

    return check


def ended_by_limit(result: ExecResult) -> None:
    assert not result.ok, result


def timed_out(result: ExecResult) -> None:
    assert result.timed_out and not result.ok, result


def attempts(*snippets: str) -> str:
    """Wrap each snippet: an exception means BLOCKED, reaching the end means ESCAPED."""
    parts = ["import os, sys, socket, ctypes, signal, subprocess, time, errno"]
    for i, snippet in enumerate(snippets):
        parts.append(
            f"try:\n{textwrap.indent(textwrap.dedent(snippet).strip(), '    ')}\n"
            f"    print('ESCAPED {i}')\nexcept Exception as e:\n    print('BLOCKED {i}', type(e).__name__)"
        )
    return "\n".join(parts) + "\n"


def libc_fails(call: str) -> str:
    """A libc call that must return -1 (reaching the end after it counts as ESCAPED)."""
    return (
        f"libc = ctypes.CDLL(None, use_errno=True)\nif ({call}) == -1:\n"
        "    raise OSError(ctypes.get_errno(), 'refused')"
    )


def syscall_fails(nr: int, *args: int) -> str:
    """A raw syscall (x86_64 numbers) that must return -1."""
    call = ", ".join(str(a) for a in (nr, *args))
    return libc_fails(f"libc.syscall({call})")


HEALTHY = textwrap.dedent(
    """
    import builtins, json, os
    procs = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    def listing(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    def sysv(kind):
        with open('/proc/sysvipc/' + kind) as f:
            return len(f.readlines()) - 1
    print(json.dumps({"uid": os.getuid(), "procs": len(procs), "work": listing('/work'),
                      "tmp": listing('/tmp'), "shm": listing('/dev/shm'), "mqueue": listing('/dev/mqueue'),
                      "sysv": [sysv(k) for k in ('shm', 'msg', 'sem')], "evil": hasattr(builtins, 'EVIL'),
                      "env": sorted(k for k in os.environ if k not in ('HOME', 'LANG', 'PATH', 'PWD',
                                    'PYTHONDONTWRITEBYTECODE', 'PYTHONUNBUFFERED', 'HOSTNAME', 'LC_CTYPE'))}))
    """
)
CLEAN = {
    "uid": 10001,
    "procs": 2,
    "work": [],
    "tmp": [],
    "shm": [],
    "mqueue": [],
    "sysv": [0, 0, 0],
    "evil": False,
    "env": [],
}


def assert_healthy(sandbox: Sandbox) -> None:
    result = sandbox.run(HEALTHY, timeout=10)
    assert result.ok, result
    state = json.loads(result.stdout)
    assert state == CLEAN, state
