"""systemd notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) without a dependency.

systemd hands a `Type=notify` service a datagram socket in `NOTIFY_SOCKET` (a path, or an
abstract name starting with "@") and, with `WatchdogSec=`, the deadline in `WATCHDOG_USEC` and
the process it applies to in `WATCHDOG_PID`. Outside systemd both are unset and every call here
is a no-op, so the daemon never has to ask.
"""

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
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        # The watchdog is the main process's job; a child that inherited the environment (a
        # worker process) must not keep a hung parent alive by pinging for it.
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        self.watchdog_interval_seconds: float | None = (
            int(usec) / 2e6 if usec and mine else None)
        self.last_status: str | None = None

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
        self.last_status = status
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets `Type=notify-reload` (systemd 253+) match this to its own SIGHUP;
        # plain Type=notify ignores it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def status(self, status: str) -> None:
        self.last_status = status
        self.notify(f"STATUS={status}")

    def update_status(self, status: str) -> bool:
        """Send STATUS= only when it differs from the last one sent (with READY or alone), so
        a caller may offer the current line every second. Returns whether it was sent."""
        if status == self.last_status:
            return False
        self.status(status)
        return True

    def watchdog(self) -> None:
        """Ping only where systemd watches this process (WatchdogSec= set, and for our pid)."""
        if self.watchdog_interval_seconds is not None:
            self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
