"""The sandbox's own seccomp filter: a classic-BPF program built here, stdlib only.

Both isolating backends load the same program. bubblewrap loads it with ``--seccomp FD`` before
it starts the run server (the local backend has no other syscall filter). In Docker the engine's
default profile stays in force and the run server stacks this program on top of it as its first
act, before it reads any code (seccomp filters only ever add restrictions; ``no_new_privs`` is
set). So a run sees Docker's default *and* this policy, and the default stays the engine's own.

Policy (what the red-team suite checks):
- ``socket``: only AF_UNIX, AF_INET, AF_INET6, and AF_NETLINK with NETLINK_ROUTE (glibc's
  ``if_nameindex`` and ``getaddrinfo`` use it); every other family (AF_VSOCK, AF_PACKET, AF_ALG,
  AF_BLUETOOTH, AF_TIPC, AF_RDS, ...) fails with EAFNOSUPPORT. ``socketpair``: AF_UNIX only.
- ``io_uring_setup/enter/register``: ENOSYS (a large kernel surface, outside seccomp's view).
- ``clone`` with any namespace flag, ``clone3`` (ENOSYS: glibc falls back to ``clone``, whose
  flags a filter can read), ``unshare``, ``setns``: refused.
- The kernel surfaces Docker's default profile also closes, for the local backend: keyrings
  (not namespaced: a cross-run channel), bpf, perf_event_open, userfaultfd, ptrace and
  process_vm_*, kcmp, module loading, kexec, mount and the new mount API, swap, reboot, clock and
  time setting, quotactl, handle-based opens, NUMA policy calls, syslog, fanotify.
- Any other architecture than the native one (e.g. i386 calls from an x86_64 process), and the
  x32 ABI: ENOSYS.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64 each); little endian.
_NR, _ARCH = 0, 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i


def _arg_hi(i: int) -> int:
    return 16 + 8 * i + 4


_LD_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000

AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, NETLINK_ROUTE = 1, 2, 10, 16, 0
CLONE_NAMESPACE_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def _names(table: str) -> dict[str, int]:
    """``"name=nr name=nr ..."`` as a dict."""
    return {name: int(nr) for name, _, nr in (pair.partition("=") for pair in table.split())}


@dataclass(frozen=True)
class _Arch:
    audit_arch: int  # AUDIT_ARCH_* in seccomp_data.arch
    x32_bit: int | None  # syscall numbers with this bit set belong to another ABI (x32)
    socket: int
    socketpair: int
    clone: int
    deny: dict[str, int]


# Syscall numbers. x86_64 is verified by the red-team suite on this machine; aarch64 uses the
# asm-generic table (and every syscall added since Linux 5.1 has one number on all architectures).
_X86_64_DENY = """
ptrace=101 syslog=103 uselib=134 ustat=136 sysfs=139 vhangup=153 pivot_root=155
_sysctl=156 adjtimex=159 acct=163 settimeofday=164 mount=165 umount2=166 swapon=167
swapoff=168 reboot=169 sethostname=170 setdomainname=171 iopl=172 ioperm=173
create_module=174 init_module=175 delete_module=176 get_kernel_syms=177 query_module=178
quotactl=179 nfsservctl=180 lookup_dcookie=212 clock_settime=227 mbind=237
set_mempolicy=238 get_mempolicy=239 kexec_load=246 add_key=248 request_key=249
keyctl=250 migrate_pages=256 unshare=272 move_pages=279 perf_event_open=298
fanotify_init=300 name_to_handle_at=303 open_by_handle_at=304 clock_adjtime=305
setns=308 process_vm_readv=310 process_vm_writev=311 kcmp=312 finit_module=313
kexec_file_load=320 bpf=321 userfaultfd=323
"""
_AARCH64_DENY = """
lookup_dcookie=18 umount2=39 mount=40 pivot_root=41 vhangup=58 quotactl=60 acct=89
unshare=97 kexec_load=104 init_module=105 delete_module=106 clock_settime=112 syslog=116
ptrace=117 reboot=142 sethostname=161 setdomainname=162 settimeofday=170 adjtimex=171
add_key=217 request_key=218 keyctl=219 swapon=224 swapoff=225 mbind=235
get_mempolicy=236 set_mempolicy=237 migrate_pages=238 move_pages=239 perf_event_open=241
fanotify_init=262 name_to_handle_at=264 open_by_handle_at=265 clock_adjtime=266
setns=268 process_vm_readv=270 process_vm_writev=271 kcmp=272 finit_module=273 bpf=280
userfaultfd=282 kexec_file_load=294
"""

_ARCHES = {
    "x86_64": _Arch(0xC000003E, 0x40000000, socket=41, socketpair=53, clone=56, deny=_names(_X86_64_DENY)),
    "aarch64": _Arch(0xC00000B7, None, socket=198, socketpair=199, clone=220, deny=_names(_AARCH64_DENY)),
}
_ENOSYS_EVERYWHERE = _names("io_uring_setup=425 io_uring_enter=426 io_uring_register=427 clone3=435")
_EPERM_EVERYWHERE = _names(
    "open_tree=428 move_mount=429 fsopen=430 fsconfig=431 fsmount=432 fspick=433 mount_setattr=442 "
    "quotactl_fd=443 memfd_secret=447"
)


class _Program:
    """A tiny assembler: instructions with symbolic jump targets, resolved at the end."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def load(self, offset: int) -> None:
        self.code.append((_LD_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, true: int | str = 0, false: int | str = 0) -> None:
        self.code.append((op, true, false, k))

    def ret(self, value: int) -> None:
        self.code.append((_RET, 0, 0, value))

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (op, jt, jf, k) in enumerate(self.code):
            offsets = [
                self.labels[target] - pc - 1 if isinstance(target, str) else target for target in (jt, jf)
            ]
            if any(not 0 <= off <= 255 for off in offsets):
                raise ValueError("seccomp program: jump out of range")
            out += struct.pack("=HBBI", op, offsets[0], offsets[1], k)
        return bytes(out)


def _errno(code: int) -> int:
    return _RET_ERRNO | code


def machine() -> str:
    return platform.machine()


def supported(arch: str | None = None) -> bool:
    return (arch or machine()) in _ARCHES


def build_filter(arch: str | None = None) -> bytes:
    """The BPF program (``struct sock_filter[]`` bytes) for ``arch`` (default: this machine's)."""
    arch = arch or machine()
    if arch not in _ARCHES:
        raise ValueError(f"no seccomp syscall table for {arch}; known: {', '.join(_ARCHES)}")
    table = _ARCHES[arch]
    deny = {**table.deny, **_EPERM_EVERYWHERE}
    p = _Program()
    p.load(_ARCH)
    p.jump(_JEQ, table.audit_arch, 0, "enosys")
    p.load(_NR)
    if table.x32_bit is not None:
        p.jump(_JGE, table.x32_bit, "enosys", 0)
    for nr in sorted(_ENOSYS_EVERYWHERE.values()):
        p.jump(_JEQ, nr, "enosys", 0)
    for nr in sorted(deny.values()):
        p.jump(_JEQ, nr, "eperm", 0)
    p.jump(_JEQ, table.socket, "socket", 0)
    p.jump(_JEQ, table.socketpair, "socketpair", 0)
    p.jump(_JEQ, table.clone, "clone", 0)
    p.ret(RET_ALLOW)

    p.label("socket")  # family is args[0]; any bit above the low 32 refuses (fails closed)
    p.load(_arg_hi(0))
    p.jump(_JEQ, 0, 0, "eafnosupport")
    p.load(_arg_lo(0))
    p.jump(_JEQ, AF_UNIX, "allow", 0)
    p.jump(_JEQ, AF_INET, "allow", 0)
    p.jump(_JEQ, AF_INET6, "allow", 0)
    p.jump(_JEQ, AF_NETLINK, 0, "eafnosupport")
    p.load(_arg_hi(2))  # netlink protocol: NETLINK_ROUTE only
    p.jump(_JEQ, 0, 0, "eafnosupport")
    p.load(_arg_lo(2))
    p.jump(_JEQ, NETLINK_ROUTE, "allow", "eafnosupport")

    p.label("socketpair")
    p.load(_arg_hi(0))
    p.jump(_JEQ, 0, 0, "eafnosupport")
    p.load(_arg_lo(0))
    p.jump(_JEQ, AF_UNIX, "allow", "eafnosupport")

    p.label("clone")  # flags are args[0]; namespace bits all live in the low half
    p.load(_arg_lo(0))
    p.jump(_JSET, CLONE_NAMESPACE_FLAGS, "eperm", "allow")

    p.label("allow")
    p.ret(RET_ALLOW)
    p.label("eperm")
    p.ret(_errno(errno.EPERM))
    p.label("enosys")
    p.ret(_errno(errno.ENOSYS))
    p.label("eafnosupport")
    p.ret(_errno(errno.EAFNOSUPPORT))
    return p.assemble()


def denied_syscalls(arch: str | None = None) -> list[str]:
    """Names of the syscalls refused outright (for docs and `ragcoder sandbox status`)."""
    table = _ARCHES[arch or machine()]
    return sorted(set(table.deny) | set(_EPERM_EVERYWHERE) | set(_ENOSYS_EVERYWHERE))
