"""The queries behind `OutboxStore.stats`: counts, ages and stuck records per sink."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from buffer.schema import DEAD, DELIVERED, PENDING

DEFAULT_STUCK_AFTER_SECONDS = 600.0
STATE_NAMES = {PENDING: "pending", DELIVERED: "delivered", DEAD: "dead"}

Read = Callable[[str, Any], Awaitable[list[Any]]]

COUNTS = "SELECT sink, state, count(*) FROM outbox GROUP BY sink, state"
OLDEST = "SELECT sink, min(created_at) FROM outbox WHERE state = 0 GROUP BY sink"
# A record is stuck once its first attempt failed (attempts > 0, still pending) and it is older
# than the threshold. SQLite's bare columns beside min() come from the row holding the minimum:
# the oldest stuck record of each sink and class (maintenance requests apart from the rest: a
# stuck request is a problem, a stuck status update or parts step only a delay).
STUCK = (
    "SELECT sink, kind = 'maintenance_request', count(*), min(created_at), id, key, asset,"
    " episode_id, attempts, last_error FROM outbox WHERE state = 0 AND attempts > 0"
    " AND created_at < ? GROUP BY sink, kind = 'maintenance_request'"
)


class SinkFigures:
    """Per-sink figures of one stats snapshot."""

    __slots__ = ("by_state", "oldest_age", "stuck", "stuck_by_class", "stuck_oldest")

    def __init__(self) -> None:
        self.by_state: dict[str, dict[str, int]] = {n: {} for n in STATE_NAMES.values()}
        self.oldest_age: dict[str, float] = {}
        self.stuck: dict[str, int] = {}
        self.stuck_oldest: dict[str, dict[str, Any]] = {}
        # sink -> "request" | "other" -> the oldest stuck record of that class, with its count
        self.stuck_by_class: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def oldest_overall(self) -> float | None:
        return max(self.oldest_age.values()) if self.oldest_age else None


async def sink_figures(read: Read, now: float, stuck_after_seconds: float) -> SinkFigures:
    if stuck_after_seconds < 0:
        raise ValueError("stuck_after_seconds must not be negative")
    fig = SinkFigures()
    for sink, state, n in await read(COUNTS, ()):
        fig.by_state[STATE_NAMES[state]][sink] = n
    for sink, first in await read(OLDEST, ()):
        fig.oldest_age[sink] = max(0.0, now - first)
    for sink, is_request, n, first, rid, key, asset, episode_id, attempts, error in await read(
            STUCK, (now - stuck_after_seconds,)):
        rec = {"id": rid, "key": key, "asset": asset, "episode_id": episode_id,
               "attempts": attempts, "last_error": error, "age_seconds": max(0.0, now - first),
               "request": bool(is_request), "count": n}
        fig.stuck[sink] = fig.stuck.get(sink, 0) + n
        fig.stuck_by_class.setdefault(sink, {})["request" if is_request else "other"] = rec
        older = fig.stuck_oldest.get(sink)
        if older is None or older["age_seconds"] < rec["age_seconds"]:
            fig.stuck_oldest[sink] = rec
    return fig
