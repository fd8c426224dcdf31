"""Test plumbing shared by all suites: free ports, real brokers, waiting on conditions.

No sleep-and-hope: every wait polls a condition and fails with a message at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds now, for a server a test starts next.

    Not from the kernel's ephemeral range (what `bind(0)` hands out): every outgoing connection
    of the suite also takes its local port from there, so a port picked that way could be
    taken by some test's client before our server binds it (seen in CI: the daemon failed to
    start on "address already in use"). Ports come from a slice below that range, one slice
    per xdist worker (no two workers pick the same port), in turn (a worker does not pick the
    same port again soon); each is checked free by binding it. Falls back to `bind(0)` when
    the machine leaves no room below its ephemeral range."""
    for _ in range(_SLICE if _SLICE >= 100 else 0):
        port = _PORTS_FROM + next(_turn) % _SLICE
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_slice() -> tuple[int, int]:
    """(first port, how many) of this process's slice: below the ephemeral range, from 20000,
    split into 8 (the xdist workers gw0..gw6, and anything else)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    size = max(0, low - 20000) // 8
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) % 7 if worker[2:].isdigit() else 7
    return 20000 + index * size, size


_PORTS_FROM, _SLICE = _port_slice()
_turn = itertools.count(random.randrange(max(1, _SLICE)))  # runs of the suite start apart


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.02,
) -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition",
                  interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_for_line(proc: subprocess.Popen[bytes], wanted: Callable[[bytes], bool],
                  timeout: float, what: str) -> bytes:
    """The first line of `proc`'s stdout (a binary pipe) that is `wanted`, within `timeout`.
    Reads the raw pipe: a buffered reader behind select() hides a line that came in one chunk
    with the lines before it, and the wait then runs out with the process long ready."""
    assert proc.stdout is not None
    fd, pending = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"{what} did not start"
        if not select.select([fd], [], [], left)[0]:
            continue
        pending += os.read(fd, 65536)
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if wanted(line):
                return line


def drain(proc: subprocess.Popen[bytes]) -> threading.Thread:
    """Read `proc`'s stdout to its end in a thread, so that a full pipe never stops it; join
    the thread (after the process ended) before closing the pipe."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()

    def run() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 65536):
                pass

    thread = threading.Thread(target=run, daemon=True, name="drain")
    thread.start()
    return thread


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if found is None:
        raise RuntimeError("mosquitto not installed: run `make test`, which installs it")
    return found


@dataclass
class Mosquitto:
    """A real broker on a free loopback port; restartable on the same port.

    `persistence` keeps retained messages and persistent sessions across `restart()` (Mosquitto
    writes its file on SIGTERM); `acl` lines restrict anonymous clients; `listener_lines` go
    under the listener (TLS certificate and key)."""

    port: int
    workdir: Path
    persistence: bool = False
    acl: list[str] = field(default_factory=list)
    listener_lines: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # `user root`: started as root, Mosquitto would otherwise drop to its own user, which
        # cannot read files in our 0700 workdir (ACL, TLS key) nor write its persistence there.
        lines = [f"listener {self.port} 127.0.0.1", *self.listener_lines,
                 "allow_anonymous true", "max_queued_messages 100000", "set_tcp_nodelay true",
                 "user root"]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        else:
            lines.append("persistence false")
        if self.acl:
            (self.workdir / "mosquitto.acl").write_text("\n".join(self.acl) + "\n")
            lines.append(f"acl_file {self.workdir / 'mosquitto.acl'}")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_for_sync(lambda: port_open(self.port), 10, f"mosquitto on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)  # with persistence, it writes its file first
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_mosquitto(workdir: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(port=free_port(), workdir=workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def self_signed_localhost(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that is its own CA, and its key (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{common_name}.pem", directory / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
