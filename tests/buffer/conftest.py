"""Fixtures and builders for the outbox suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from buffer.store import OutboxStore
from gateway.model import (
    MessageClass,
    MessageKind,
    OutboxMessage,
    RequestDetails,
    Transition,
    TransitionKind,
)


def message(key: str, *, sink: str = "cmms", asset: str = "pump-1", episode_id: str | None = None,
            kind: MessageKind = MessageKind.MAINTENANCE_REQUEST,
            message_class: MessageClass = MessageClass.EVENT, created_at: float = 1000.0,
            body: dict[str, Any] | None = None) -> OutboxMessage:
    """An outbox message; without `episode_id`, one episode per asset ("ep-<asset>")."""
    return OutboxMessage(
        key=key, sink=sink, asset=asset,
        episode_id=episode_id if episode_id is not None else f"ep-{asset}", kind=kind,
        body=body if body is not None else {"title": f"body of {key}", "n": 1},
        created_at=created_at, message_class=message_class)


def transition(kind: TransitionKind, episode_id: str = "ep-1", *, rule_id: str = "vib-high",
               asset: str = "pump-1", ts: float = 1000.0, severity: int = 2) -> Transition:
    return Transition(kind=kind, rule_id=rule_id, asset=asset, signal="vibration",
                      episode_id=episode_id, severity=severity, value=7.4, ts=ts,
                      reason="vibration 7.4 above 7.1", request=RequestDetails(title="check"))


async def pragma(store: OutboxStore, name: str) -> Any:
    """Read a PRAGMA on the store's own connection (some are per connection)."""
    rows = await store._db.execute_fetchall(f"PRAGMA {name}")
    return next(iter(rows))[0]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "outbox.sqlite"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[OutboxStore]:
    s = await OutboxStore.open(db_path)
    try:
        yield s
    finally:
        await s.close()
