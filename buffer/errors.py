"""The outbox's own small exception hierarchy; sqlite3 errors never cross the package boundary."""

from __future__ import annotations

from pathlib import Path


class OutboxError(Exception):
    """Anything the outbox refuses or cannot do."""


class BufferFull(OutboxError):
    """The size budget is reached and nothing more may be shed: telemetry/status refused."""

    def __init__(self, refused: int, used_bytes: int, budget_bytes: int) -> None:
        self.refused = refused
        self.used_bytes = used_bytes
        self.budget_bytes = budget_bytes
        super().__init__(
            f"outbox budget of {budget_bytes} bytes is reached ({used_bytes} bytes in use) and "
            f"no older telemetry or status records are left to shed: {refused} new "
            "non-event messages refused; maintenance requests and clears are still accepted"
        )


class StorageError(OutboxError):
    """SQLite could not write or read the outbox file (I/O error, locked, read-only)."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"outbox {path}: {detail}")


class StorageFull(StorageError):
    """The disk (or SQLite's page limit) is full. Nothing was written; retry when space returns."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "the disk is full, nothing was written; the commit can be "
                               "retried once space is freed")


class OutboxSchemaTooNew(OutboxError):
    """The file was written by a newer PlantBridge: refuse rather than misread it."""

    def __init__(self, path: Path, found: int, known: int) -> None:
        self.path = path
        self.found = found
        self.known = known
        super().__init__(
            f"outbox {path} has schema version {found}, but this PlantBridge only knows versions "
            f"up to {known}: run a newer PlantBridge or move the file aside"
        )


class OutboxForeignFile(OutboxError):
    """A valid SQLite file that is not a PlantBridge outbox: never overwrite someone's data."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"{path} is not a PlantBridge outbox ({detail}): check buffer.path")


class OutboxLocked(OutboxError):
    """Another process holds the outbox (a second `plantbridge run` on the same state dir).

    Not a StorageError: the file is fine, it is in use. `pid` is the holder's, when it wrote it.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"PID {pid}" if pid is not None else "PID unknown"
        super().__init__(f"outbox {path} is in use by another PlantBridge ({holder})")
