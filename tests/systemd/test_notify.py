"""The daemon as systemd sees it: a real `plantbridge run` process with NOTIFY_SOCKET and
WATCHDOG_USEC pointing at a datagram socket this test listens on, driven by real signals.

Expected, in this order: READY=1 (with the start-up problem in STATUS=), WATCHDOG=1, STATUS=ok
once the problem goes away (the broker comes up), RELOADING=1 on SIGHUP, READY=1 when the
reload is done, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for


class NotifyListener:
    """What systemd's end of NOTIFY_SOCKET would receive: one dict per datagram, and the pid
    that sent it (SO_PASSCRED, as systemd checks for NotifyAccess=main)."""

    def __init__(self, name: str) -> None:
        self.address = "@" + name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + name)
        self.sock.setblocking(False)
        self.got: list[dict[str, str]] = []
        self.senders: list[int] = []

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
                pid = next(struct.unpack("iII", cdata)[0]
                           for level, kind, cdata in ancillary
                           if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS)
                self.got.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
                self.senders.append(pid)

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock, self._read)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock)
        self.sock.close()

    def index(self, key: str, value: str | None = None, after: int = -1) -> int | None:
        """The first message after position `after` that carries `key` (= `value`)."""
        for i, msg in enumerate(self.got):
            if i > after and key in msg and (value is None or msg[key] == value):
                return i
        return None

    async def wait(self, key: str, value: str | None = None, after: int = -1,
                   timeout: float = 30) -> int:
        try:
            await wait_for(lambda: self.index(key, value, after) is not None, timeout,
                           f"{key}={value or '...'} after message {after}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received: {self.got}") from None
        found = self.index(key, value, after)
        assert found is not None
        return found


@pytest.fixture
async def listener() -> AsyncIterator[NotifyListener]:
    n = NotifyListener(f"plantbridge-test-notify-{os.getpid()}")
    n.start()
    try:
        yield n
    finally:
        n.close()


async def test_systemd_hears_ready_watchdog_status_reload_and_stop(
        stack: Stack, listener: NotifyListener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2: ping every second
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    stack.write_config(vibration_rule())
    stack.broker.stop()  # the source cannot connect yet: a problem that goes away later
    proc = stack.spawn_daemon()  # inherits the environment, as under systemd
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):  # the broker must not talk to our socket
        monkeypatch.delenv(name)

    ready = await listener.wait("READY", "1")
    assert "source plant" in listener.got[ready]["STATUS"], listener.got[ready]
    ping = await listener.wait("WATCHDOG", "1", after=ready)

    stack.broker.start()
    ok = await listener.wait("STATUS", "ok", after=ping)

    proc.send_signal(signal.SIGHUP)  # what ExecReload=/bin/kill -HUP $MAINPID does
    reloading = await listener.wait("RELOADING", "1", after=ok)
    assert int(listener.got[reloading]["MONOTONIC_USEC"]) > 0
    ready_again = await listener.wait("READY", "1", after=reloading)
    assert listener.got[ready_again]["STATUS"] == "ok"

    proc.send_signal(signal.SIGTERM)  # systemctl stop
    assert await asyncio.to_thread(proc.wait, 30) == 0, stack.daemon_log()[-3000:]
    stopping = await listener.wait("STOPPING", "1", after=ready_again, timeout=5)

    kinds = [next(k for k in ("READY", "RELOADING", "STOPPING", "WATCHDOG", "STATUS") if k in m)
             for m in listener.got]
    order = [kinds[i] for i in (ready, ping, ok, reloading, ready_again, stopping)]
    assert order == ["READY", "WATCHDOG", "STATUS", "RELOADING", "READY", "STOPPING"], kinds
    # Only the main process speaks (NotifyAccess=main would drop anything else), and STATUS=
    # is sent alone only when it changed (READY=1 always carries the current line).
    assert set(listener.senders) == {proc.pid}, (listener.senders, proc.pid)
    with_status = [m for m in listener.got if "STATUS" in m]
    assert all(a["STATUS"] != b["STATUS"] for a, b in itertools.pairwise(with_status)
               if "READY" not in b), with_status
