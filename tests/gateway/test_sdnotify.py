from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from gateway.sdnotify import SystemdNotifier


def test_notify_reaches_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "10000000")
        n = SystemdNotifier()
        assert n.enabled and n.watchdog_interval_seconds == 5.0
        n.ready("ok")
        assert server.recv(1024) == b"READY=1\nSTATUS=ok"
        n.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"


def test_without_systemd_it_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = SystemdNotifier()
    assert not n.enabled
    n.ready("ok")  # must not raise


def _listen(name: str) -> socket.socket:
    """A datagram socket in the abstract namespace, as systemd's "@..." NOTIFY_SOCKET."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    return server


def test_abstract_socket_and_status_sent_only_when_it_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"plantbridge-test-{os.getpid()}-status"
    with _listen(name) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        n = SystemdNotifier()
        n.ready("1 problem(s): source plant (mqtt) is connecting")
        assert server.recv(1024).startswith(b"READY=1\nSTATUS=1 problem(s)")
        assert not n.update_status("1 problem(s): source plant (mqtt) is connecting")
        assert n.update_status("ok")
        assert not n.update_status("ok")
        n.stopping()  # the next datagram: proves nothing was sent for the repeats
        assert server.recv(1024) == b"STATUS=ok"
        assert server.recv(1024) == b"STOPPING=1"


def test_reloading_carries_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Type=notify-reload matches RELOADING=1 to its signal by MONOTONIC_USEC."""
    name = f"plantbridge-test-{os.getpid()}-reload"
    with _listen(name) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        SystemdNotifier().reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        first, second = server.recv(1024).decode().split("\n")
        assert first == "RELOADING=1"
        key, usec = second.split("=")
        assert key == "MONOTONIC_USEC" and before <= int(usec) <= after


def test_watchdog_of_another_process_is_not_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that inherited WATCHDOG_PID of its parent must not ping for it."""
    name = f"plantbridge-test-{os.getpid()}-wdpid"
    with _listen(name) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
        child = SystemdNotifier()
        assert child.watchdog_interval_seconds is None
        child.watchdog()
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        main = SystemdNotifier()
        assert main.watchdog_interval_seconds == 1.0
        main.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"  # the main one's, and nothing before it
        server.setblocking(False)  # a local datagram is queued by the time send returns
        with pytest.raises(BlockingIOError):
            server.recv(1024)
