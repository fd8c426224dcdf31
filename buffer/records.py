"""The outbox's own result types and settings (the shared ones live in gateway.model)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    Per sink: `oldest_pending_age_by_sink`; `stuck` counts pending records whose first attempt
    failed and that are older than `stuck_after_seconds` (they keep retrying and hold back only
    their own episode); `stuck_oldest` describes the oldest stuck record of each sink (id, key,
    asset, episode_id, attempts, last_error, age_seconds) for the status page, and
    `stuck_by_class` the same per class ("request": maintenance requests, "other"), with counts.
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
    oldest_pending_age_by_sink: dict[str, float] = field(default_factory=dict)
    stuck: dict[str, int] = field(default_factory=dict)
    stuck_oldest: dict[str, dict[str, Any]] = field(default_factory=dict)
    stuck_by_class: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What opening a corrupt outbox carried over into the fresh file.

    `moved_to` is where the damaged file was kept. `carried` counts rows per kind (open_episodes,
    closed_episodes, receipts, pending, dead, delivered, rule_state, sample_marks, notices);
    `unreadable` counts rows per table that could not be read, or says why a whole table (or the
    whole file, key "file") could not be read when no count is known.
    """

    moved_to: Path
    carried: dict[str, int]
    unreadable: dict[str, int | str]

    def summary(self) -> str:
        """One line for a log and the status page."""
        c, lost = self.carried, self.unreadable
        parts = [f"{c.get('open_episodes', 0)} open episodes and "
                 f"{c.get('pending', 0)} pending records carried over"]
        counted = sum(v for v in lost.values() if isinstance(v, int))
        if counted:
            parts.append(f"{counted} rows unreadable")
        parts.extend(f"{name}: {v}" for name, v in lost.items() if isinstance(v, str))
        return f"outbox was damaged (kept at {self.moved_to}): " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Notice:
    """Something an operator must see until acknowledged (e.g. `kind` "salvage")."""

    id: int
    kind: str
    created_at: float
    message: str
    detail: dict[str, Any]


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
    undelivered: dict[tuple[str, str], str]  # (sink, episode_id) -> pending | dead: open requests
    urgent: list[UrgentRecord]


@dataclass(frozen=True, slots=True)
class PreparedCommit:
    """One `commit` encoded on the event loop, ready to be written in one transaction.

    Made by `OutboxStore.prepare` (msgpack bodies and states packed once, parameter rows built
    once) so that a pipeline can evaluate its next group while this one is written, and retry a
    failed write without encoding again. Immutable: nothing the caller does afterwards changes
    what is written, and the messages themselves (their bodies) need not be kept. One message
    row per distinct key (the first message of a key wins); `message_bytes` is the tracked size
    of all of them, an upper bound of what the commit adds to the budget.
    """

    message_rows: tuple[tuple[Any, ...], ...]
    message_bytes: int
    episode_rows: tuple[tuple[Any, ...], ...]
    state_upserts: tuple[tuple[Any, ...], ...]
    state_deletes: tuple[tuple[str, str], ...]
    mark_rows: tuple[tuple[Any, ...], ...]

    @property
    def appends(self) -> bool:
        """Whether it carries messages or transitions (else only states and marks, or nothing)."""
        return bool(self.message_rows or self.episode_rows)

    def __bool__(self) -> bool:
        return bool(self.message_rows or self.episode_rows or self.state_upserts
                    or self.state_deletes or self.mark_rows)
