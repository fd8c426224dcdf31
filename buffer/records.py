"""The outbox's own result types and settings (the shared ones live in gateway.model)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.model import MessageKind


class Synchronous(enum.StrEnum):
    """SQLite `synchronous` with WAL. FULL survives power loss; NORMAL survives a process crash
    but may lose the last commits on power loss, for fewer fsyncs."""

    FULL = "full"
    NORMAL = "normal"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the sink rejected for good, kept until an operator requeues or drops it."""

    id: int
    key: str
    sink: str
    asset: str
    kind: MessageKind
    reason: str
    failed_at: float
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot for status and metrics.

    `bytes` is the tracked size of stored rows (the figure `budget_bytes` is enforced against);
    `file_bytes` is what the database and its WAL occupy on disk (SQLite page overhead and free
    pages included, so it is larger). `shed` counts records dropped for the budget since open,
    by class name; `refused` counts non-event messages refused with BufferFull since open;
    `forgotten` counts delivered telemetry/status keys dropped early to make room (before any
    undelivered record is shed; nothing is lost but their deduplication memory).
    """

    pending: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_seconds: float | None = None
    bytes: int = 0
    file_bytes: int = 0
    budget_bytes: int | None = None
    shed: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    forgotten: int = 0
    full: bool = False


@dataclass(frozen=True, slots=True)
class UrgentRecord:
    """A maintenance request of a critical episode that is still not delivered."""

    sink: str
    asset: str
    episode_id: str
    state: str  # pending | dead
    created_at: float
    last_error: str
    severity: int


@dataclass(frozen=True, slots=True)
class StatusRows:
    """What the status page needs beyond `OutboxStats` (see OutboxStore.status_rows)."""

    receipts: dict[tuple[str, str], str]  # (sink, episode_id) -> upstream id, open episodes
    facts: dict[str, dict[str, object]]  # episode_id -> what its request said (value, reason)
    oldest_pending_age_seconds: dict[str, float]  # per sink, sinks with something pending
    undelivered: dict[tuple[str, str], str]  # (sink, episode_id) -> pending | dead: open requests
    urgent: list[UrgentRecord]
