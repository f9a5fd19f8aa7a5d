"""Red team: hostile programs, each must be contained, and the next normal run must still work.

Every program prints markers that say what it managed; ``check`` asserts on the ExecResult.
After each one, ``assert_healthy`` runs a normal program on the same sandbox and checks that it
works and starts clean: no leftover process, empty /work and /tmp, non-root, no network.
Both real backends run the whole list (Docker: marked ``docker``).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from ragcoder.sandbox import ExecResult, Sandbox

pytestmark = pytest.mark.redteam

SECRET = "rt-secret-9f1c2b"
os.environ["RAGCODER_REDTEAM_SECRET"] = SECRET  # set before any sandbox opens: must never be visible


@dataclass(frozen=True)
class Hostile:
    id: str
    code: str
    check: Callable[[ExecResult], None]
    timeout: float = 5.0


def blocked(result: ExecResult) -> None:
    """The program printed BLOCKED for each attempt and never ESCAPED."""
    assert "ESCAPED" not in result.stdout, result
    assert "BLOCKED" in result.stdout, result


def ended_by_limit(result: ExecResult) -> None:
    assert not result.ok, result


def _attempts(*snippets: str) -> str:
    """Wrap each snippet: exceptions mean BLOCKED, reaching the end means ESCAPED."""
    parts = ["import os, sys, socket, ctypes, signal, subprocess, time"]
    for i, snippet in enumerate(snippets):
        parts.append(
            f"try:\n{textwrap.indent(textwrap.dedent(snippet).strip(), '    ')}\n"
            f"    print('ESCAPED {i}')\nexcept Exception as e:\n    print('BLOCKED {i}', type(e).__name__)"
        )
    return "\n".join(parts) + "\n"


def _libc_fails(call: str) -> str:
    """A libc call that must return -1 (else raise ESCAPED via reaching the end)."""
    return f"libc = ctypes.CDLL(None, use_errno=True)\nif ({call}) == -1:\n    raise OSError(ctypes.get_errno(), 'refused')"


HOSTILE = [
    Hostile("tcp-egress", _attempts("socket.create_connection(('1.1.1.1', 80), timeout=2)"), blocked),
    Hostile(
        "udp-egress",
        _attempts("s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('8.8.8.8', 53))"),
        blocked,
    ),
    Hostile("dns", _attempts("socket.getaddrinfo('pypi.org', 443)"), blocked),
    Hostile(
        "only-loopback",
        "import socket\nprint(sorted(name for _, name in socket.if_nameindex()))",
        lambda r: assert_equal(r.stdout, "['lo']\n"),
    ),
    Hostile(
        "raw-socket",
        _attempts(
            "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
            "socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
        ),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 2, r),
    ),
    Hostile(
        "host-files",
        _attempts(
            "open('/etc/shadow').read()",
            "open('/root/.bashrc').read()",
            f"open({os.path.abspath('pyproject.toml')!r}).read()",
            "open('/proc/1/root/root/.bashrc').read()",
            "os.listdir('/home/..' + os.sep + 'root')",
        ),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 5, r),
    ),
    Hostile(
        "env-secrets",
        "import os\nprint(sorted(os.environ))\nprint(open('/proc/1/environ','rb').read() if os.access('/proc/1/environ', os.R_OK) else b'')",
        lambda r: (
            assert_equal(SECRET in r.stdout, False, r),
            assert_equal("RAGCODER_REDTEAM_SECRET" in r.stdout, False, r),
        ),
    ),
    Hostile(
        "write-outside-work",
        _attempts(
            "open('/etc/evil', 'w').write('x')",
            "open('/usr/evil', 'w').write('x')",
            "open('/evil', 'w').write('x')",
            "open('/proc/sysrq-trigger', 'w').write('b')",
        ),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 4, r),
    ),
    Hostile(
        "fill-work-disk",
        "data = b'x' * (1 << 20)\nn = 0\ntry:\n    with open('big', 'wb') as f:\n        while True:\n            f.write(data); f.flush(); n += 1\nexcept OSError as e:\n    print('STOPPED', n, e.errno)",
        lambda r: (
            assert_equal("STOPPED" in r.stdout or r.oom_killed, True, r),
            assert_equal(r.timed_out, False, r),
        ),
        timeout=20,
    ),
    Hostile(
        "fill-tmp",
        "data = b'x' * (1 << 20)\nn = 0\ntry:\n    with open('/tmp/big', 'wb') as f:\n        while True:\n            f.write(data); f.flush(); n += 1\nexcept OSError as e:\n    print('STOPPED', n, e.errno)",
        lambda r: assert_equal("STOPPED" in r.stdout or r.oom_killed, True, r),
        timeout=20,
    ),
    Hostile(
        "memory-bomb",
        "x = []\nwhile True:\n    x.append(bytearray(64 << 20))",
        lambda r: assert_equal(
            r.oom_killed or (r.error is not None and r.error.name == "MemoryError"), True, r
        ),
        timeout=20,
    ),
    Hostile(
        "fork-bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        ended_by_limit,
        timeout=3,
    ),
    Hostile(
        "infinite-loop", "while True:\n    pass", lambda r: assert_equal(r.timed_out, True, r), timeout=1
    ),
    Hostile(
        "sleep-ignoring-signals",
        "import signal, time\nfor s in range(1, 32):\n    try:\n        signal.signal(s, signal.SIG_IGN)\n    except (OSError, ValueError):\n        pass\ntime.sleep(1000)",
        lambda r: assert_equal(r.timed_out, True, r),
        timeout=1,
    ),
    Hostile(
        "non-daemon-thread-forever",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()",
        lambda r: assert_equal(r.timed_out, True, r),
        timeout=1,
    ),
    Hostile(
        "stdout-flood",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        lambda r: (
            assert_equal(r.timed_out, True, r),
            assert_equal(len(r.stdout) < 70_000, True),
            assert_equal("output truncated" in r.stdout, True),
        ),
        timeout=1,
    ),
    Hostile(
        "stderr-flood-then-error",
        "import sys\nfor _ in range(2000):\n    sys.stderr.write('y' * 1000)\nraise ValueError('at the end')",
        lambda r: (
            assert_equal(r.error is not None and r.error.name == "ValueError", True, r),
            assert_equal(len(r.stderr) < 70_000, True),
        ),
    ),
    Hostile(
        "close-server-pipes",
        "import os\nfor fd in range(0, 1024):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\nimport time\ntime.sleep(0.2)",
        lambda r: assert_equal(r.timed_out, False, r),
    ),
    Hostile(
        "hijack-server-pipes",
        _attempts(
            "fd = os.open('/proc/1/fd/1', os.O_WRONLY)\nos.write(fd, (20).to_bytes(4, 'big') + b'{\"ok\": true, \"x\": 1}')",
            "fd = os.open('/proc/1/fd/0', os.O_RDONLY)\nos.read(fd, 100)",
            "os.open('/proc/1/mem', os.O_RDONLY)",
        ),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 3, r),
    ),
    Hostile(
        "kill-pid-1",
        "import os, signal, time\nfor s in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP, signal.SIGSEGV):\n    try:\n        os.kill(1, s)\n    except OSError as e:\n        print('refused', e)\ntime.sleep(0.3)\nprint('done')",
        lambda r: assert_equal(r.stdout.endswith("done\n"), True, r),
    ),
    Hostile(
        "kill-everything",
        "import os, signal\nos.kill(-1, signal.SIGKILL)",
        lambda r: None,  # whatever it reports, the next run must work (assert_healthy)
    ),
    Hostile(
        "os-system",
        "import os\nos.system('id -u > /work/id.txt; cat /etc/shadow 2>/dev/null; echo status $?')\nprint(open('/work/id.txt').read().strip())",
        lambda r: assert_equal(r.stdout.strip().splitlines()[-1], "10001", r),
    ),
    Hostile(
        "subprocess-network",
        _attempts(
            "subprocess.run([sys.executable, '-c', \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=1)\"], check=True, capture_output=True)"
        ),
        blocked,
    ),
    Hostile(
        "ctypes-root",
        _attempts(_libc_fails("libc.setuid(0)"), _libc_fails("libc.setgid(0)")),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 2, r),
    ),
    Hostile(
        "setuid",
        _attempts("os.setuid(0)", "os.seteuid(0)", "os.chown('/work', 0, 0)"),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 3, r),
    ),
    Hostile(
        "mount",
        _attempts(
            _libc_fails("libc.mount(b'none', b'/work', b'tmpfs', 0, None)"),
            _libc_fails("libc.unshare(0x10000000 | 0x00020000)"),  # CLONE_NEWUSER | CLONE_NEWNS
        ),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 2, r),
    ),
    Hostile(
        "ptrace",
        _attempts(_libc_fails("libc.ptrace(16, 1, None, None)")),  # PTRACE_ATTACH to the server
        blocked,
    ),
    Hostile(
        "docker-socket",
        _attempts(
            "s = socket.socket(socket.AF_UNIX)\ns.connect('/var/run/docker.sock')",
            "s = socket.socket(socket.AF_UNIX)\ns.connect('/run/containerd/containerd.sock')",
        ),
        lambda r: assert_equal(r.stdout.count("BLOCKED"), 2, r),
    ),
    Hostile(
        "daemon-survives-run",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(0.5)\n        open('/tmp/daemon-was-here', 'w').write('x')\n        time.sleep(1000)\n    os._exit(0)\nprint('spawned')",
        lambda r: assert_equal(r.stdout, "spawned\n", r),
    ),
    Hostile(
        "stack-overflow-segfault",
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
        ended_by_limit,
        timeout=10,
    ),
    Hostile(
        "leave-state-behind",
        "import builtins, sys, os\nbuiltins.EVIL = 1\nsys.modules['json'] = None\nopen('/tmp/x', 'w').write('x')\nos.makedirs('/work/sub', exist_ok=True)\nopen('/dev/shm/x', 'w').write('x') if os.path.isdir('/dev/shm') else None",
        lambda r: assert_equal(r.ok, True, r),
    ),
]

HEALTHY = textwrap.dedent(
    """
    import builtins, json, os, socket, time
    time.sleep(0.6)  # long enough for a surviving daemon of the previous run to show itself
    procs = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    shm = os.listdir('/dev/shm') if os.path.isdir('/dev/shm') else []
    print(json.dumps({"uid": os.getuid(), "procs": len(procs), "work": os.listdir('/work'),
                      "tmp": os.listdir('/tmp'), "shm": shm, "evil": hasattr(builtins, 'EVIL')}))
    """
)


def assert_equal(actual: object, expected: object, context: object = None) -> None:
    assert actual == expected, context


def assert_healthy(sandbox: Sandbox) -> None:
    import json

    result = sandbox.run(HEALTHY, timeout=10)
    assert result.ok, result
    state = json.loads(result.stdout)
    assert state == {"uid": 10001, "procs": 2, "work": [], "tmp": [], "shm": [], "evil": False}, state


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.id for h in HOSTILE])
def test_hostile_program_is_contained(backend: Sandbox, hostile: Hostile) -> None:
    result = backend.run(hostile.code, timeout=hostile.timeout)
    hostile.check(result)
    assert_healthy(backend)


def test_there_are_at_least_25_hostile_programs() -> None:
    assert len(HOSTILE) >= 25
