"""Run a command under the kernel-level parts of plantbridge.service, without systemd.

    python -m tests.systemd.sandbox -- COMMAND [ARG...]

systemd turns SystemCallFilter=, SystemCallErrorNumber=, SystemCallArchitectures=,
RestrictAddressFamilies=, MemoryDenyWriteExecute= and NoNewPrivileges= into seccomp filters.
This builds the same filters with libseccomp (through ctypes: a function call, no callback, so
no writable-executable memory of our own) and execs the command under them:

- the allow list is `systemd-analyze syscall-filter` of our unit's groups, expanded by the
  installed systemd itself, so it is the list systemd would load on this machine;
- a call outside it fails with EPERM, as with SystemCallErrorNumber=EPERM;
- socket() for a family other than AF_UNIX, AF_INET, AF_INET6 fails with EAFNOSUPPORT;
- mmap() of writable+executable memory, mprotect() to executable and shmat(SHM_EXEC) fail with
  EPERM, the rules systemd's MemoryDenyWriteExecute= loads.

The groups are read from the unit file so that this follows the unit when it changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "plantbridge.service"

ACT_ALLOW = 0x7FFF0000
CMP_LT, CMP_EQ, CMP_GT, CMP_MASKED_EQ = 2, 4, 6, 7
SHM_EXEC = 0o100000


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def libseccomp() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        return None
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def unit_filter(unit_text: str) -> tuple[list[str], list[str]]:
    """The groups the unit allows and the ones it then takes away, in systemd's notation."""
    allow: list[str] = []
    deny: list[str] = []
    for line in unit_text.splitlines():
        m = re.fullmatch(r"SystemCallFilter=(~?)(.*)", line.strip())
        if m:
            (deny if m.group(1) else allow).extend(m.group(2).split())
    return allow, deny


def expand(names: list[str]) -> set[str]:
    """System call names of these groups (and plain names), as the installed systemd lists them."""
    out: set[str] = set()
    todo = list(names)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not name.startswith("@"):
            out.add(name)
            continue
        listing = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True,
                                 capture_output=True, text=True).stdout
        for line in listing.splitlines()[1:]:
            item = line.strip()
            if item and not item.startswith("#"):
                todo.append(item)
    return out


def _add(lib: ctypes.CDLL, ctx: int, action: int, call: str, *cmps: ArgCmp) -> None:
    nr = lib.seccomp_syscall_resolve_name(call.encode())
    if nr < 0:
        return  # not a system call of this architecture (systemd skips these too)
    array = (ArgCmp * max(1, len(cmps)))(*cmps)
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp rule for {call}: {os.strerror(-rc)}")


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctx)
    lib.seccomp_release(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def apply(unit_text: str) -> None:
    lib = libseccomp()
    if lib is None:
        raise RuntimeError("libseccomp is not installed")
    allow, deny = unit_filter(unit_text)
    allowed = expand(allow) - expand(deny)
    if not allowed:
        raise RuntimeError("the unit has no SystemCallFilter= allow list")

    # 1. RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 and MemoryDenyWriteExecute=yes.
    ctx = lib.seccomp_init(ACT_ALLOW)
    families = sorted(int(f) for f in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6))
    no_family = _errno_action(errno.EAFNOSUPPORT)
    _add(lib, ctx, no_family, "socket", ArgCmp(0, CMP_LT, families[0], 0))
    _add(lib, ctx, no_family, "socket", ArgCmp(0, CMP_GT, families[-1], 0))
    for family in range(families[0] + 1, families[-1]):
        if family not in families:
            _add(lib, ctx, no_family, "socket", ArgCmp(0, CMP_EQ, family, 0))
    wx = mmap.PROT_WRITE | mmap.PROT_EXEC
    _add(lib, ctx, _errno_action(errno.EPERM), "mmap", ArgCmp(2, CMP_MASKED_EQ, wx, wx))
    for call in ("mprotect", "pkey_mprotect"):
        _add(lib, ctx, _errno_action(errno.EPERM), call,
             ArgCmp(2, CMP_MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
    _add(lib, ctx, _errno_action(errno.EPERM), "shmat", ArgCmp(2, CMP_MASKED_EQ, SHM_EXEC,
                                                               SHM_EXEC))
    _load(lib, ctx)

    # 2. SystemCallFilter= with SystemCallErrorNumber=EPERM (only this architecture's calls).
    # Last: seccomp() itself is not on the list, so no filter can be loaded after this one.
    ctx = lib.seccomp_init(_errno_action(errno.EPERM))
    for call in sorted(allowed):
        _add(lib, ctx, ACT_ALLOW, call)
    _load(lib, ctx)


def main(argv: list[str]) -> None:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.exit("usage: python -m tests.systemd.sandbox -- COMMAND [ARG...]")
    apply(UNIT.read_text())  # libseccomp sets no_new_privs first, as NoNewPrivileges=yes
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
