"""Red team, part 3: a run that tries to reach the next one on the same warm worker (one server in
the pool, so consecutive runs meet), or to make cleaning up after it cost the next run.

Each case is a planting run and a probing run: the probe must find nothing, and it must not be
slowed or timed out by what the plant left behind. Then: timeouts and exit codes as issue 20
found them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from ragcoder.sandbox import Sandbox

from ragcoder.errors import ConfigError
from tests.sandbox.redteam import assert_healthy

pytestmark = pytest.mark.redteam

LIBC = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@dataclass(frozen=True)
class Leak:
    id: str
    plant: str  # prints 'planted'
    probe: str  # prints 'clean' when it finds nothing
    timeout: float = 10.0


LEAKS = [
    Leak(  # issue 20: SysV shared memory survived the cleanup: run 2 read run 1's secret
        "sysv-shared-memory",
        LIBC + "libc.shmat.restype = ctypes.c_void_p\nsid = libc.shmget(0x5EC, 4096, 0o1666)\n"
        "addr = libc.shmat(sid, None, 0)\nctypes.memmove(addr, b'secret', 6)\nprint('planted')",
        LIBC
        + "print('clean' if libc.shmget(0x5EC, 0, 0) == -1 and open('/proc/sysvipc/shm').read().count('\\n') == 1 else 'FOUND')",
    ),
    Leak(  # issue 20: SysV message queues
        "sysv-message-queue",
        LIBC
        + "q = libc.msgget(0x5ED, 0o1666)\nbuf = ctypes.create_string_buffer(b'\\x01\\0\\0\\0\\0\\0\\0\\0secret')\n"
        "assert libc.msgsnd(q, buf, 6, 0) == 0\nprint('planted')",
        LIBC + "print('clean' if libc.msgget(0x5ED, 0) == -1 else 'FOUND')",
    ),
    Leak(  # issue 20: SysV semaphores
        "sysv-semaphore",
        LIBC + "assert libc.semget(0x5EE, 1, 0o1666) >= 0\nprint('planted')",
        LIBC + "print('clean' if libc.semget(0x5EE, 0, 0) == -1 else 'FOUND')",
    ),
    Leak(  # issue 20: POSIX message queues
        "posix-message-queue",
        LIBC + "q = libc.mq_open(b'/secret', os.O_CREAT | os.O_RDWR, 0o600, None)\nassert q >= 0\n"
        "assert libc.mq_send(q, b'secret', 6, 0) == 0\nprint('planted')",
        LIBC + "print('clean' if libc.mq_open(b'/secret', os.O_RDONLY) == -1 else 'FOUND')",
    ),
    Leak(  # issue 20: a 400 MB segment left by run 1 got the next run OOM-killed (200 MB of 256 here)
        "big-shared-memory-segment",
        LIBC
        + "libc.shmat.restype = ctypes.c_void_p\nsize = 200 << 20\nsid = libc.shmget(0x5EF, size, 0o1666)\n"
        "addr = libc.shmat(sid, None, 0)\nctypes.memset(addr, 1, size)\nprint('planted')",
        "block = bytearray(200 << 20)\nfor i in range(0, len(block), 4096):\n    block[i] = 1\nprint('clean')",
        timeout=20,
    ),
    Leak(
        "environment",
        "import os\nos.environ['LEAK'] = 'secret'\nos.putenv('LEAK2', 'secret')\nprint('planted')",
        "import os\nprint('clean' if 'LEAK' not in os.environ and 'LEAK2' not in os.environ else 'FOUND')",
    ),
    Leak(
        "abstract-socket-daemon",
        "import os, socket, time\nif os.fork() == 0:\n    os.setsid()\n    s = socket.socket(socket.AF_UNIX)\n"
        "    s.bind('\\0ragcoder-leak')\n    s.listen()\n    while True:\n        c, _ = s.accept()\n        c.sendall(b'secret')\n"
        "time.sleep(0.1)\nprint('planted')",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('\\0ragcoder-leak')\n    print('FOUND')\n"
        "except OSError:\n    print('clean')",
    ),
    Leak(
        "timer-daemon-writes-later",
        "import os, threading, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(0.3)\n"
        "    open('/work/late.txt', 'w').write('secret')\n    os._exit(0)\nprint('planted')",
        "import os, time\ntime.sleep(0.5)\nprint('clean' if not os.path.exists('/work/late.txt') else 'FOUND')",
    ),
    Leak(
        "limits-umask-and-cwd",
        "import os, resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (8, 8))\nos.umask(0o777)\nos.chdir('/tmp')\nprint('planted')",
        "import os, resource\nok = resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 8 and os.getcwd() == '/work'\n"
        "open('x', 'w').write('x')\nprint('clean' if ok and os.stat('x').st_mode & 0o600 == 0o600 else 'FOUND')",
    ),
    Leak(  # issue 20: 1,500 nested folders in /tmp: RecursionError, the server died
        "nested-folders-in-tmp",
        "import os\nos.chdir('/tmp')\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nprint('planted')",
        "import os\nprint('clean' if os.listdir('/tmp') == [] else 'FOUND')",
    ),
    Leak(  # issue 20: 750k hard links: the next innocent print() timed out at 13 s
        "hard-links-in-tmp",
        "import os\nos.chdir('/tmp')\nopen('f', 'w').close()\nfor i in range(750_000):\n    os.link('f', f'l{i}')\nprint('planted')",
        "print('clean')",
        timeout=30,
    ),
]


@pytest.mark.parametrize("leak", LEAKS, ids=[leak.id for leak in LEAKS])
def test_a_run_cannot_reach_the_next(solo: Sandbox, leak: Leak) -> None:
    planted = solo.run(leak.plant, timeout=leak.timeout)
    assert planted.stdout == "planted\n", planted
    started = time.monotonic()
    probe = solo.run(leak.probe, timeout=10)
    assert probe.ok and probe.stdout == "clean\n", probe
    assert time.monotonic() - started < 5, "the next run waited on the last one's mess"
    assert_healthy(solo)


@pytest.mark.parametrize(
    "tree",
    [
        "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nopen('leaf', 'w').write('x')",
        "import os\nopen('f', 'w').close()\nfor i in range(100_000):\n    os.link('f', f'l{i}')",
    ],
    ids=["nested", "hard-links"],
)
def test_trees_in_work_still_give_a_result(solo: Sandbox, tree: str) -> None:
    """Issue 20: the same trees in /work made run() raise instead of returning a result."""
    result = solo.run(tree + "\nprint('made')", timeout=30)
    assert result.ok and result.stdout == "made\n", result
    assert len(result.files) <= 50
    assert_healthy(solo)


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e308, -1.0, 0.0])
def test_a_timeout_that_is_not_a_sane_number_is_one_clear_error(backend: Sandbox, timeout: float) -> None:
    with pytest.raises(ConfigError) as info:
        backend.run("print(1)", timeout=timeout)
    assert "\n" not in str(info.value) and "timeout" in str(info.value)
    with pytest.raises(ConfigError):
        backend.run_tests("x = 1", "assert x == 1", timeout=timeout)
    assert backend.run("print(1)").stdout == "1\n"  # nothing was taken from the pool


@pytest.mark.parametrize("code", ["2**64", "2**63", "256", "-1", "2**32 + 3", "'text'", "None"])
def test_exit_codes_are_reported_as_cpython_reports_them(backend: Sandbox, code: str) -> None:
    program = f"import sys\nsys.exit({code})"
    expected = subprocess.run([sys.executable, "-c", program], capture_output=True, check=False).returncode
    result = backend.run(program)
    assert result.exit_code == expected and result.ok == (expected == 0), (code, result)
