"""Durable rule state and sample marks: the rows `OutboxStore.commit` writes beside transitions.

The outbox knows no rule kind: a rule instance's state is an opaque msgpack blob keyed by
(rule_id, asset), tagged with the rule's fingerprint so a changed definition can refuse it. A
sample mark is the newest device time evaluated per (source, asset, signal). Both are upserted
only for what a commit group changed, so most commits write no state at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite
import msgpack

from gateway.model import RuleState, SampleMark

UPSERT_STATE = (
    "INSERT INTO rule_state (rule_id, asset, fingerprint, data, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (rule_id, asset) DO UPDATE"
    " SET fingerprint = excluded.fingerprint, data = excluded.data,"
    " updated_at = excluded.updated_at"
)
DELETE_STATE = "DELETE FROM rule_state WHERE rule_id = ? AND asset = ?"
UPSERT_MARK = (
    "INSERT INTO sample_marks (source, asset, signal, device_ts) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (source, asset, signal) DO UPDATE SET device_ts = excluded.device_ts"
)


class StateRows:
    """The parameter rows of one commit's states and marks, encoded before the transaction
    starts (a state that cannot be packed fails the commit before anything is written)."""

    __slots__ = ("deletes", "marks", "upserts")

    def __init__(self, packer: msgpack.Packer, states: Sequence[RuleState],
                 marks: Sequence[SampleMark], now: float) -> None:
        # the last entry for a key wins, as if each had been applied in order
        latest: dict[tuple[str, str], RuleState] = {}
        for s in states:
            latest[(s.rule_id, s.asset)] = s
        self.upserts: list[tuple[Any, ...]] = []
        self.deletes: list[tuple[str, str]] = []
        for (rule_id, asset), s in latest.items():
            if s.data is None:
                self.deletes.append((rule_id, asset))
            else:
                try:
                    blob = packer.pack(s.data)
                except (TypeError, ValueError, OverflowError) as exc:
                    packer.reset()
                    raise ValueError(
                        f"state of rule {rule_id!r} for asset {asset!r} cannot be stored: "
                        f"{exc}") from exc
                self.upserts.append((rule_id, asset, s.fingerprint, blob, now))
        by_key: dict[tuple[str, str, str], float] = {}
        for m in marks:
            by_key[(m.source, m.asset, m.signal)] = float(m.device_ts)
        self.marks = [(*key, ts) for key, ts in by_key.items()]

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes or self.marks)

    async def write(self, db: aiosqlite.Connection) -> None:
        """Apply inside the caller's transaction."""
        if self.upserts:
            await db.executemany(UPSERT_STATE, self.upserts)
        if self.deletes:
            await db.executemany(DELETE_STATE, self.deletes)
        if self.marks:
            await db.executemany(UPSERT_MARK, self.marks)


def rule_state_row(r: Sequence[Any]) -> RuleState:
    return RuleState(rule_id=r[0], asset=r[1], fingerprint=r[2],
                     data=msgpack.unpackb(r[3], strict_map_key=False))


def mark_row(r: Sequence[Any]) -> SampleMark:
    return SampleMark(source=r[0], asset=r[1], signal=r[2], device_ts=r[3])


LOAD_STATES = "SELECT rule_id, asset, fingerprint, data FROM rule_state ORDER BY rule_id, asset"
LOAD_MARKS = "SELECT source, asset, signal, device_ts FROM sample_marks ORDER BY 1, 2, 3"
