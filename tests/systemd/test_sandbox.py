"""The daemon does its whole job inside the unit's system-call sandbox.

`tests/systemd/sandbox.py` loads the seccomp filters that systemd builds from the unit's
SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute= lines. First we check
that the sandbox refuses what the unit refuses (so the second test proves something); then a
real `plantbridge run` in it takes MQTT telemetry, raises and clears a request on the CMMS
simulator (over `localhost`, so name resolution runs too), serves its status page, reloads on
SIGHUP and stops cleanly on SIGTERM, with no error in its log.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.e2e.stack import Stack, vibration_rule
from tests.harness import free_port, wait_for
from tests.systemd.sandbox import libseccomp

pytestmark = pytest.mark.skipif(libseccomp() is None or shutil.which("systemd-analyze") is None,
                                reason="needs libseccomp2 and systemd-analyze (Debian: systemd)")

SANDBOX = [sys.executable, "-m", "tests.systemd.sandbox", "--"]

PROBE = """
import mmap, os, socket
def refused(what, call):
    try:
        call()
    except OSError as exc:
        return f"{what}: {exc.errno}"
    return f"{what}: allowed"
print(refused("inet", lambda: socket.socket(socket.AF_INET6).close()))
print(refused("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)))
print(refused("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)))
print(refused("nice", lambda: os.nice(1)))
print(refused("setuid", lambda: os.setuid(os.getuid())))
print(refused("w+x", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)))
print(refused("rw", lambda: mmap.mmap(-1, 4096).close()))
# What an encrypted OPC UA session does with OpenSSL (asyncua's password-protected key), and
# the compiled modules the daemon imports: none of it needs writable+executable memory.
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.BestAvailableEncryption(b"pw"))
serialization.load_pem_private_key(pem, password=b"pw")
import asyncua, numpy, orjson, pydantic_core, sqlite3, uvloop  # noqa: E401
print("compiled modules: ok")
"""


def test_the_sandbox_refuses_what_the_unit_refuses() -> None:
    got = subprocess.run([*SANDBOX, sys.executable, "-c", PROBE], capture_output=True,
                         text=True, timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split("\n")[:-1] == [
        "inet: allowed",
        "netlink: 97",  # EAFNOSUPPORT: RestrictAddressFamilies=
        "packet: 97",
        "nice: 1",  # EPERM: ~@resources
        "setuid: 1",  # EPERM: ~@privileged
        "w+x: 1",  # EPERM: MemoryDenyWriteExecute=
        "rw: allowed",
        "compiled modules: ok",
    ], got.stdout


def _spawn_sandboxed(stack: Stack) -> subprocess.Popen[bytes]:
    """Like Stack.spawn_daemon, with the sandbox in front (the stack kills it if a test fails)."""
    with open(stack.tmp / "daemon.log", "ab") as log:
        stack.proc = subprocess.Popen(
            [*SANDBOX, sys.executable, "-m", "gateway.cli", "run", "--config",
             str(stack.tmp / "plantbridge.toml")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return stack.proc


async def test_the_daemon_works_inside_the_units_sandbox(stack: Stack) -> None:
    port = free_port()
    upstream = stack.rest_upstream().replace("http://127.0.0.1:", "http://localhost:")
    assert "localhost" in upstream
    stack.write_config(vibration_rule(), http_port=port, upstream=upstream)
    proc = _spawn_sandboxed(stack)
    await stack.wait_subprocess_up(port)

    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.requests) == 1 and len(stack.sim.status_updates) == 1,
                   30, f"request and clear upstream; log:\n{stack.daemon_log()[-2000:]}")
    status = await stack.subprocess_status(port)
    assert status is not None and status["problems"] == [], status

    proc.send_signal(signal.SIGHUP)
    await wait_for(lambda: "reloaded" in stack.daemon_log(), 20, "the reload")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, stack.daemon_log()[-3000:]
    log_text = stack.daemon_log()
    for bad in ("Traceback", "ERROR", "Operation not permitted", "not supported"):
        assert bad not in log_text, log_text[-3000:]
