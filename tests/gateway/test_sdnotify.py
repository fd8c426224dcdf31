from __future__ import annotations

import socket
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
