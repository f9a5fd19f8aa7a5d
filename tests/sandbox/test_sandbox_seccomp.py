"""The seccomp program, checked without a kernel: a small classic-BPF interpreter runs it on
synthetic syscalls. (The red-team suite checks the same policy on the real backends.)"""

from __future__ import annotations

import errno
import struct

import pytest
from ragcoder.sandbox.seccomp import RET_ALLOW, build_filter, denied_syscalls, supported

X86_64 = 0xC000003E
AARCH64 = 0xC00000B7


def evaluate(program: bytes, nr: int, arch: int = X86_64, args: tuple[int, ...] = ()) -> int:
    """Run ``program`` (struct sock_filter[]) on one seccomp_data; returns the action."""
    full = (list(args) + [0] * 6)[:6]
    data = struct.pack("<IIQ6Q", nr, arch, 0, *full)
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    for _ in range(10_000):
        op, jt, jf, k = code[pc]
        if op == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif op in (0x15, 0x35, 0x45):  # jeq, jge, jset
            taken = acc == k if op == 0x15 else acc >= k if op == 0x35 else bool(acc & k)
            pc += 1 + (jt if taken else jf)
        elif op == 0x06:  # ret k
            return k
        else:
            raise AssertionError(f"unexpected BPF op {op:#x}")
    raise AssertionError("the program did not return")


def errno_of(action: int) -> int:
    assert action & 0xFFFF0000 == 0x00050000, hex(action)
    return action & 0xFFFF


PROGRAM = build_filter("x86_64")


def test_it_is_a_valid_program() -> None:
    assert len(PROGRAM) % 8 == 0 and len(PROGRAM) // 8 < 4096
    assert supported("x86_64") and supported("aarch64") and not supported("riscv64")
    assert build_filter("aarch64") != PROGRAM
    with pytest.raises(ValueError, match="no seccomp syscall table"):
        build_filter("riscv64")


@pytest.mark.parametrize(
    ("family", "protocol", "allowed"),
    [
        (1, 0, True),
        (2, 6, True),
        (10, 17, True),
        (16, 0, True),
        (16, 9, False),
        (16, 15, False),
        (40, 0, False),
        (17, 0, False),
        (38, 0, False),
        (31, 0, False),
        (30, 0, False),
        (21, 0, False),
        (44, 0, False),
        (0, 0, False),
        (1 | 1 << 32, 0, False),
        (2 | 1 << 63, 0, False),
    ],
)
def test_socket_families(family: int, protocol: int, allowed: bool) -> None:
    action = evaluate(PROGRAM, 41, args=(family, 1, protocol))
    if allowed:
        assert action == RET_ALLOW
    else:
        assert errno_of(action) == errno.EAFNOSUPPORT


def test_socketpair_is_unix_only() -> None:
    assert evaluate(PROGRAM, 53, args=(1, 1, 0)) == RET_ALLOW
    assert errno_of(evaluate(PROGRAM, 53, args=(2, 1, 0))) == errno.EAFNOSUPPORT


@pytest.mark.parametrize("nr", [425, 426, 427, 435])
def test_io_uring_and_clone3_do_not_exist(nr: int) -> None:
    assert errno_of(evaluate(PROGRAM, nr)) == errno.ENOSYS


def test_clone_with_a_namespace_flag_is_refused() -> None:
    fork_flags = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD (glibc fork)
    thread_flags = 0x003D0F00  # pthread_create's flags
    assert evaluate(PROGRAM, 56, args=(fork_flags,)) == RET_ALLOW
    assert evaluate(PROGRAM, 56, args=(thread_flags,)) == RET_ALLOW
    for flag in (0x10000000, 0x20000000, 0x40000000, 0x08000000, 0x04000000, 0x02000000, 0x00020000):
        assert errno_of(evaluate(PROGRAM, 56, args=(fork_flags | flag,))) == errno.EPERM


def test_denied_calls_and_everything_else() -> None:
    names = denied_syscalls("x86_64")
    assert {"keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "ptrace", "mount"} <= set(names)
    for nr in (250, 248, 321, 298, 323, 101, 165, 272, 308, 310, 430):
        assert errno_of(evaluate(PROGRAM, nr)) == errno.EPERM, nr
    for nr in (
        0,
        1,
        2,
        9,
        39,
        57,
        59,
        61,
        231,
        318,
        434,
    ):  # read write open mmap getpid fork execve wait4 exit_group getrandom pidfd_open
        assert evaluate(PROGRAM, nr) == RET_ALLOW, nr


def test_other_abis_are_refused() -> None:
    assert errno_of(evaluate(PROGRAM, 39 | 0x40000000)) == errno.ENOSYS  # x32
    assert errno_of(evaluate(PROGRAM, 20, arch=0x40000003)) == errno.ENOSYS  # i386 getpid
    assert errno_of(evaluate(build_filter("aarch64"), 172, arch=X86_64)) == errno.ENOSYS


def test_aarch64_table() -> None:
    program = build_filter("aarch64")
    assert errno_of(evaluate(program, 198, arch=AARCH64, args=(40, 1, 0))) == errno.EAFNOSUPPORT
    assert evaluate(program, 198, arch=AARCH64, args=(2, 1, 0)) == RET_ALLOW
    assert errno_of(evaluate(program, 219, arch=AARCH64)) == errno.EPERM  # keyctl
    assert errno_of(evaluate(program, 425, arch=AARCH64)) == errno.ENOSYS
    assert evaluate(program, 172, arch=AARCH64) == RET_ALLOW  # getpid
