"""The sandbox's seccomp filter, built with libseccomp's Python bindings and handed to bwrap as BPF.

A deny list (EPERM) of kernel surfaces that test-passing code never needs and that escapes and
privilege escalations go through: other address families than AF_UNIX (the network namespace
already has no route out; this stops the socket before it exists), ptrace and cross-process memory,
namespaces/mounts, keyrings, BPF, perf, io_uring, userfaultfd, module and kexec loading, TIOCSTI
terminal injection. Syscalls of other ABIs (i386 via int 0x80, x32) hit the default bad-arch
action, which kills the process.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys

_DENY = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree",
    "fsopen", "fsmount", "fsconfig", "fspick", "mount_setattr",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "syslog", "quotactl", "lookup_dcookie",
    "name_to_handle_at", "open_by_handle_at", "personality", "vhangup",
)
_CLONE_NS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
             0x00000080)   # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
_AF_UNIX = 1
_TIOCSTI = 0x5412


@functools.lru_cache(maxsize=4)
def filter_bpf(seccomp_path: str | None) -> bytes | None:
    """The compiled filter, or None when the bindings are not available (the layer is then absent)."""
    if seccomp_path is None:
        return None
    if seccomp_path not in sys.path:
        sys.path.append(seccomp_path)
    try:
        import seccomp
    except ImportError:
        return None
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)
    for name in _DENY:
        with contextlib.suppress(RuntimeError, ValueError):   # a syscall this kernel/arch does not know
            f.add_rule(eperm, name)
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")   # flags behind a pointer: glibc falls back to clone
    for flag in _CLONE_NS:
        f.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    f.add_rule(eperm, "socket", seccomp.Arg(0, seccomp.NE, _AF_UNIX))
    f.add_rule(eperm, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, _TIOCSTI))
    fd = os.memfd_create("q3-seccomp", 0)
    with os.fdopen(fd, "w+b") as fh:
        f.export_bpf(fh)
        fh.flush()
        return _read_all(fd)


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    return out
