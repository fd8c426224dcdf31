"""Real nats-server processes with JetStream for the tests: one server, or a 3-node cluster.

Also a TCP proxy that can lose a PubAck: it relays client→server in full, and on command closes
the connection the moment the server's answer to a chosen publish comes back, so the event is
stored but the client never hears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import free_port, port_open, wait_for_sync


def nats_server_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)


def require_nats_server() -> str:
    found = nats_server_binary()
    if found is None:
        pytest.skip("nats-server is not installed (scripts/setup installs Debian's package)")
    return found


@dataclass
class NatsServer:
    """One nats-server with JetStream on a free loopback port; stop/start keeps its store."""

    workdir: Path
    name: str = "n1"
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    routes: list[int] = field(default_factory=list)  # cluster ports of the other nodes
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        store = self.workdir / f"js-{self.name}"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"{self.name}.conf"
        text = (f'server_name: "{self.name}"\nlisten: "127.0.0.1:{self.port}"\n'
                f'jetstream {{ store_dir: "{store}" }}\n')
        if self.routes:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            text += (f'cluster {{ name: "pb"\n listen: "127.0.0.1:{self.cluster_port}"\n'
                     f' routes: [{routes}] }}\n')
        conf.write_text(text)
        with open(self.workdir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen([require_nats_server(), "-c", str(conf)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_sync(lambda: port_open(self.port), 15, f"nats-server {self.name}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def cluster(workdir: Path, size: int = 3) -> list[NatsServer]:
    nodes = [NatsServer(workdir, name=f"n{i + 1}") for i in range(size)]
    for n in nodes:
        n.routes = [m.cluster_port for m in nodes if m is not n]
    return nodes


class AckLosingProxy:
    """Loopback TCP proxy in front of a nats-server. `lose_ack_of(subject)`: the next publish
    on that subject reaches the server, and the connection is cut before its PubAck returns."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._subject: bytes | None = None
        self._dropping = False
        self.cuts = 0
        self._writers: list[asyncio.StreamWriter] = []

    def lose_ack_of(self, subject: str) -> None:
        self._subject = subject.encode()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in self._writers:
                w.close()
            await self._server.wait_closed()

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [c_writer, s_writer]
        armed = asyncio.Event()

        async def up() -> None:  # client → server: everything, and notice the chosen publish
            while chunk := await c_reader.read(65536):
                if self._subject is not None and b"PUB " + self._subject in chunk:
                    self._subject = None
                    armed.set()
                s_writer.write(chunk)
                await s_writer.drain()

        async def down() -> None:  # server → client: until the answer to the chosen publish
            while chunk := await s_reader.read(65536):
                if armed.is_set() and b"MSG " in chunk:
                    self.cuts += 1
                    break
                c_writer.write(chunk)
                await c_writer.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (c_writer, s_writer):
            w.close()
