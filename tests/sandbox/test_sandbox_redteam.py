"""Red team, part 1: hostile programs given to ``run``. Each must be contained, and the next normal
run on the same sandbox must still work and start clean (``assert_healthy``). Both real backends
run the whole list (Docker: marked ``docker``). Parts 2 and 3: ``test_sandbox_redteam_verdicts.py``
(forged test verdicts) and ``test_sandbox_redteam_leaks.py`` (runs that try to reach the next).
"""

from __future__ import annotations

import os
import platform

import pytest
from ragcoder.sandbox import Sandbox

from tests.sandbox.redteam import (
    SECRET,
    Hostile,
    all_blocked,
    assert_healthy,
    attempts,
    blocked,
    ended_by_limit,
    libc_fails,
    timed_out,
)

pytestmark = pytest.mark.redteam
X86_64 = platform.machine() == "x86_64"


def assert_equal(actual: object, expected: object, context: object = None) -> None:
    assert actual == expected, context


def syscall_refused(nr: int, *args: str, errno_name: str = "") -> str:
    """A raw x86_64 syscall that must fail (with ``errno_name`` when given)."""
    call = ", ".join(str(a) for a in (nr, *args))
    check = f" and ctypes.get_errno() == errno.{errno_name}" if errno_name else ""
    return (
        f"libc = ctypes.CDLL(None, use_errno=True)\nif libc.syscall({call}) == -1{check}:\n"
        "    raise OSError(ctypes.get_errno(), 'refused')"
    )


# -- the list the suite started with (31) ---------------------------------------------------------
HOSTILE = [
    Hostile("tcp-egress", attempts("socket.create_connection(('1.1.1.1', 80), timeout=2)"), blocked),
    Hostile(
        "udp-egress",
        attempts("s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('8.8.8.8', 53))"),
        blocked,
    ),
    Hostile("dns", attempts("socket.getaddrinfo('pypi.org', 443)"), blocked),
    Hostile(
        "only-loopback",
        "import socket\nprint(sorted(name for _, name in socket.if_nameindex()))",
        lambda r: assert_equal(r.stdout, "['lo']\n", r),
    ),
    Hostile(
        "raw-socket",
        attempts(
            "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
            "socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
        ),
        all_blocked(2),
    ),
    Hostile(
        "host-files",
        attempts(
            "open('/etc/shadow').read()",
            "open('/root/.bashrc').read()",
            f"open({os.path.abspath('pyproject.toml')!r}).read()",
            "open('/proc/1/root/root/.bashrc').read()",
            "os.listdir('/home/..' + os.sep + 'root')",
        ),
        all_blocked(5),
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
        attempts(
            "open('/etc/evil', 'w').write('x')",
            "open('/usr/evil', 'w').write('x')",
            "open('/evil', 'w').write('x')",
            "open('/proc/sysrq-trigger', 'w').write('b')",
        ),
        all_blocked(4),
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
    Hostile("infinite-loop", "while True:\n    pass", timed_out, timeout=1),
    Hostile(
        "sleep-ignoring-signals",
        "import signal, time\nfor s in range(1, 32):\n    try:\n        signal.signal(s, signal.SIG_IGN)\n    except (OSError, ValueError):\n        pass\ntime.sleep(1000)",
        timed_out,
        timeout=1,
    ),
    Hostile(
        "non-daemon-thread-forever",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()",
        timed_out,
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
        attempts(
            "fd = os.open('/proc/1/fd/1', os.O_WRONLY)\nos.write(fd, (20).to_bytes(4, 'big') + b'{\"ok\": true, \"x\": 1}')",
            "fd = os.open('/proc/1/fd/0', os.O_RDONLY)\nos.read(fd, 100)",
            "os.open('/proc/1/mem', os.O_RDONLY)",
        ),
        all_blocked(3),
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
        attempts(
            "subprocess.run([sys.executable, '-c', \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=1)\"], check=True, capture_output=True)"
        ),
        blocked,
    ),
    Hostile(
        "ctypes-root", attempts(libc_fails("libc.setuid(0)"), libc_fails("libc.setgid(0)")), all_blocked(2)
    ),
    Hostile("setuid", attempts("os.setuid(0)", "os.seteuid(0)", "os.chown('/work', 0, 0)"), all_blocked(3)),
    Hostile(
        "mount",
        attempts(
            libc_fails("libc.mount(b'none', b'/work', b'tmpfs', 0, None)"),
            libc_fails("libc.unshare(0x10000000 | 0x00020000)"),  # CLONE_NEWUSER | CLONE_NEWNS
        ),
        all_blocked(2),
    ),
    Hostile("ptrace", attempts(libc_fails("libc.ptrace(16, 1, None, None)")), blocked),  # PTRACE_ATTACH
    Hostile(
        "docker-socket",
        attempts(
            "s = socket.socket(socket.AF_UNIX)\ns.connect('/var/run/docker.sock')",
            "s = socket.socket(socket.AF_UNIX)\ns.connect('/run/containerd/containerd.sock')",
        ),
        all_blocked(2),
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

# -- issue 20 and new cases: the kernel surface (x86_64 syscall numbers) --------------------------
# (family, type, protocol): packet, alg, bluetooth, tipc, rds, key, xdp, can, netlink audit and uevent
ODD_FAMILIES = [
    (17, 3, 0),
    (38, 5, 0),
    (31, 1, 0),
    (30, 5, 0),
    (21, 5, 0),
    (15, 3, 2),
    (44, 3, 0),
    (29, 3, 1),
    (16, 3, 9),
    (16, 2, 15),
]
KERNEL = [
    Hostile(  # issue 20: the host has /dev/vsock; socket(AF_VSOCK) used to succeed
        "vsock",
        attempts("socket.socket(40, socket.SOCK_STREAM)", "socket.socket(40, socket.SOCK_DGRAM)"),
        all_blocked(2),
    ),
    Hostile(  # issue 20: io_uring_setup was allowed
        "io-uring",
        attempts(
            "buf = ctypes.create_string_buffer(120)\n"
            + syscall_refused(425, "8", "ctypes.byref(buf)", errno_name="ENOSYS"),
            syscall_refused(426, "0", "0", "0", "0", errno_name="ENOSYS"),
            syscall_refused(427, "0", "0", "0", "0", errno_name="ENOSYS"),
        ),
        all_blocked(3),
    ),
    Hostile(
        "odd-socket-families",  # packet, alg, bluetooth, tipc, rds, key, xdp, can, netlink audit/uevent
        attempts(
            *[f"socket.socket({fam}, {kind}, {proto})" for fam, kind, proto in ODD_FAMILIES],
            "socket.socketpair(socket.AF_INET)",
        ),
        all_blocked(11),
    ),
    Hostile(
        "loopback-still-works",
        "import socket\nsrv = socket.create_server(('127.0.0.1', 0))\nc = socket.create_connection(srv.getsockname())\n"
        "s, _ = srv.accept()\nc.sendall(b'ping')\nprint(s.recv(4).decode())\na, b = socket.socketpair()\na.send(b'x')\nprint(b.recv(1))",
        lambda r: assert_equal(r.stdout, "ping\nb'x'\n", r),
    ),
    Hostile(
        "keyrings",  # kernel keyrings are not namespaced: a channel between runs and containers
        attempts(
            libc_fails("libc.syscall(248, b'user', b'k', b'secret', 6, -2)"),  # add_key to the user keyring
            syscall_refused(250, "0", "-2", "0"),  # keyctl(GET_KEYRING_ID, USER)
            syscall_refused(249, "b'user'", "b'k'", "None", "0"),  # request_key
        ),
        all_blocked(3),
    ),
    Hostile(
        "bpf-perf-userfaultfd",
        attempts(
            syscall_refused(321, "0", "0", "0"),
            "attr = ctypes.create_string_buffer(128)\n"
            + syscall_refused(298, "ctypes.byref(attr)", "0", "-1", "-1", "0"),
            syscall_refused(323, "0"),
        ),
        all_blocked(3),
    ),
    Hostile(
        "trace-and-peek",
        attempts(
            syscall_refused(101, "0", "0", "0", "0"),  # PTRACE_TRACEME
            "buf = ctypes.create_string_buffer(8)\n" + syscall_refused(310, "1", "0", "0", "0", "0", "0"),
            syscall_refused(312, "1", "os.getpid()", "0", "0", "0"),  # kcmp
        ),
        all_blocked(3),
    ),
    Hostile(
        "new-namespaces",
        attempts(
            syscall_refused(272, "0x40000000"),  # unshare(CLONE_NEWNET)
            syscall_refused(272, "0x08000000"),  # unshare(CLONE_NEWIPC)
            syscall_refused(308, "0", "0"),  # setns
            syscall_refused(56, "0x10000000 | 17", "0", "0", "0", "0"),  # clone(CLONE_NEWUSER|SIGCHLD)
            syscall_refused(435, "0", "0", errno_name="ENOSYS"),  # clone3: its flags hide from seccomp
        ),
        all_blocked(5),
    ),
    Hostile(
        "other-abis",  # x32 getpid: another syscall table the filter would not see
        attempts(syscall_refused(0x40000000 | 39, errno_name="ENOSYS")),
        blocked,
    ),
    Hostile(
        "set-the-clock",
        attempts(
            "ts = (ctypes.c_long * 2)(0, 0)\n"
            + syscall_refused(227, "0", "ctypes.byref(ts)"),  # clock_settime
            "tv = (ctypes.c_long * 2)(0, 0)\n"
            + syscall_refused(164, "ctypes.byref(tv)", "0"),  # settimeofday
        ),
        all_blocked(2),
    ),
    Hostile(
        "mount-api",
        attempts(syscall_refused(430, "b'tmpfs'", "0"), syscall_refused(428, "-100", "b'/'", "0")),
        all_blocked(2),
    ),
]

# -- new cases: exhaustion, signals, descriptors, /proc, time ---------------------------------------
EXHAUSTION = [
    Hostile(
        "fd-exhaustion",
        "fds = []\ntry:\n    while True:\n        fds.append(open('/dev/null'))\nexcept OSError as e:\n    print('STOPPED', len(fds) < 100_000, e.errno)",
        lambda r: assert_equal(r.stdout, "STOPPED True 24\n", r),
    ),
    Hostile(
        "thread-bomb",
        "import threading, time\nn = 0\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n        n += 1\nexcept Exception as e:\n    print('STOPPED', type(e).__name__)",
        lambda r: assert_equal("STOPPED" in r.stdout or not r.ok, True, r),
        timeout=10,
    ),
    Hostile(
        "fill-dev-shm",
        "data = b'x' * (1 << 20)\ntry:\n    with open('/dev/shm/big', 'wb') as f:\n        while True:\n            f.write(data); f.flush()\nexcept OSError as e:\n    print('STOPPED', e.errno)",
        lambda r: assert_equal("STOPPED" in r.stdout or r.oom_killed, True, r),
        timeout=20,
    ),
    Hostile(
        "many-small-files",
        "import os\nfor i in range(30_000):\n    open(f'/tmp/f{i}', 'w').close()\nprint('made')",
        lambda r: assert_equal(r.stdout, "made\n", r),
        timeout=20,
    ),
    Hostile(
        "sparse-terabyte",
        "with open('big', 'wb') as f:\n    try:\n        f.truncate(1 << 40)\n        print('sparse')\n    except OSError as e:\n        print('STOPPED', e.errno)",
        lambda r: (
            assert_equal(r.ok, True, r),
            assert_equal(sum(len(v) for v in r.files.values()) <= 1 << 20, True),
        ),
    ),
    Hostile(
        "mmap-overcommit",
        "import mmap\nm = mmap.mmap(-1, 8 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\nfor i in range(0, 8 << 30, 4096):\n    m[i] = 1",
        lambda r: assert_equal(r.oom_killed or r.error is not None, True, r),
        timeout=20,
    ),
]
SIGNALS_AND_FDS = [
    Hostile(
        "kill-own-group-and-pid-1",
        "import os, signal\nfor sig in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTERM):\n    try:\n        os.kill(1, sig)\n    except OSError:\n        pass\nos.killpg(0, signal.SIGKILL)",
        lambda r: assert_equal(r.exit_code, -9, r),
    ),
    Hostile("stop-self", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)", timed_out, timeout=1),
    Hostile(
        "alarm-storm",
        "import signal, time\nsignal.signal(signal.SIGALRM, lambda *a: None)\nsignal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\nwhile True:\n    time.sleep(1)",
        timed_out,
        timeout=1,
    ),
    Hostile(  # issue 20: a forged exit frame on fd 3 + closed fds made a sleeping run ok=True in 8 ms
        "forged-exit-frame",
        'import os, time\nos.write(3, b\'{"kind": "exit", "status": 0}\\n\')\nfor fd in (0, 1, 2, 3):\n    os.close(fd)\ntime.sleep(30)',
        lambda r: (timed_out(r), assert_equal(r.duration_ms >= 1000, True, r)),
        timeout=1,
    ),
    Hostile(  # issue 20: a fake SandboxCrashed frame made the agent stop
        "forged-crash-frame",
        'import os\nos.write(3, b\'{"kind": "error", "name": "SandboxCrashed", "value": "x", "traceback": ""}\\n\')\nos._exit(0)',
        lambda r: (assert_equal(r.error.name, "__main__.SandboxCrashed", r), assert_equal(r.ok, False)),
    ),
    Hostile(
        "raised-crash",
        "class SandboxCrashed(Exception):\n    pass\nraise SandboxCrashed('the sandbox is down, stop')",
        lambda r: assert_equal(r.error.name, "__main__.SandboxCrashed", r),
    ),
    Hostile(
        "stdout-to-a-daemon",  # a child keeps the run's stdout: the answer must not wait for it
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        print('tick', flush=True)\n        time.sleep(0.01)\nprint('parent done')",
        lambda r: (
            assert_equal(r.stdout.startswith("parent done") or "parent done" in r.stdout, True, r),
            assert_equal(r.duration_ms < 3000, True, r),
        ),
    ),
    Hostile(
        "proc-of-the-server",
        attempts(
            "open('/proc/1/environ', 'rb').read()",
            "open('/proc/1/maps').read()",
            "os.listdir('/proc/1/fd')",
            "open('/proc/self/oom_score_adj', 'w').write('-1000')",
            "open('/proc/sys/kernel/core_pattern', 'w').write('|/bin/sh')",
            "open('/sys/fs/cgroup/memory/memory.limit_in_bytes', 'w').write('-1')",
        ),
        all_blocked(6),
    ),
    Hostile(
        "exit-code-2-to-the-64",  # issue 20: reported 0 and ok
        "import sys\nsys.exit(2**64)",
        lambda r: (assert_equal(r.exit_code, 255, r), assert_equal(r.ok, False)),
    ),
    Hostile(
        "slow-atexit",
        "import atexit, time\natexit.register(time.sleep, 60)\nprint('bye')",
        timed_out,  # 'bye' is still in the buffer, as in CPython: atexit runs before the final flush
        timeout=1,
    ),
    Hostile(
        "finalizer-loop",  # weakref.finalize runs at exit (through atexit): a loop there is still timed
        "import weakref\nclass Stuck:\n    pass\nkeep = Stuck()\nweakref.finalize(keep, lambda: any(iter(int, 1)))\nprint('bye')",
        timed_out,
        timeout=1,
    ),
]


ALL = HOSTILE + KERNEL + EXHAUSTION + SIGNALS_AND_FDS
_KERNEL_IDS = {h.id for h in KERNEL}


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(h, marks=pytest.mark.skipif(not X86_64, reason="x86_64 syscall numbers"))
        if h.id in _KERNEL_IDS
        else h
        for h in ALL
    ],
    ids=[h.id for h in ALL],
)
def test_hostile_program_is_contained(backend: Sandbox, hostile: Hostile) -> None:
    result = backend.run(hostile.code, timeout=hostile.timeout)
    hostile.check(result)
    assert_healthy(backend)


def test_there_are_many_hostile_programs() -> None:
    assert len(HOSTILE) == 31  # the list before issue 20
    assert len(ALL) - len(HOSTILE) >= 28
