"""Config of the outbox: one strict model that builds the running store."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from buffer.records import Synchronous
from buffer.store import DEFAULT_RETENTION_SECONDS, OutboxStore
from gateway.settings import StrictModel


class OutboxConfig(StrictModel):
    """`[buffer]`: where the outbox lives, how durable a commit is, and how big it may grow."""

    type: Literal["sqlite"] = "sqlite"
    name: str = "outbox"
    path: Path = Path("outbox.sqlite")  # relative paths are resolved against `state_dir`
    synchronous: Synchronous = Synchronous.FULL
    max_bytes: int | None = Field(default=512 * 1024 * 1024, gt=0)  # tracked row bytes
    retention_seconds: float = Field(default=DEFAULT_RETENTION_SECONDS, gt=0)

    def resolved_path(self, state_dir: Path) -> Path:
        return self.path if self.path.is_absolute() else state_dir / self.path

    async def build(self, state_dir: Path, *, lock: bool = False) -> OutboxStore:
        """Open the store (async: opening checks, salvages and migrates the file). The daemon
        passes `lock=True` (one instance per outbox; OutboxLocked names the holder's PID);
        offline tools leave it False and work beside the daemon."""
        return await OutboxStore.open(self.resolved_path(state_dir),
                                      synchronous=self.synchronous, max_bytes=self.max_bytes,
                                      retention_seconds=self.retention_seconds, lock=lock)
