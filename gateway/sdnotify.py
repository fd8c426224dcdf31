"""systemd notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) without a dependency."""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]
        self._addr = addr
        usec = os.environ.get("WATCHDOG_USEC")
        self.watchdog_interval_seconds: float | None = int(usec) / 2e6 if usec else None

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, *fields: str) -> None:
        if not self._addr:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.connect(self._addr)
                s.sendall("\n".join(fields).encode())
            except OSError:
                pass  # systemd went away; nothing useful to do

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
