"""The delivering side of the outbox: lease due heads, mark them sent, settle the outcomes
(with their attempt history), in one transaction per forwarder round, and prune past the
retention every few minutes. A mixin of `OutboxStore`, as operator.py is for the views."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial
from typing import Any

from buffer.attempts import Attempt, MessageFacts, history_rows
from buffer.base import StoreBase
from buffer.retention import prune
from buffer.statements import LEASE, leased_record, settle_and_lease_in_one
from gateway.model import Delivery, OutboxRecord

PRUNE_INTERVAL_SECONDS = 300.0


class OutboxSending(StoreBase):
    """Lease, mark sent, settle: what a forwarder asks of an open outbox."""

    async def lease(self, sink: str, limit: int, now: float,
                    exclude: Collection[int] = ()) -> list[OutboxRecord]:
        """Due pending records of `sink`, most urgent first, then oldest, at most one per
        episode (its head of line): a clear waits for its raise to be settled; other episodes
        never wait. Records whose id is in `exclude` (being sent: a caller's own bookkeeping)
        are left out, and `limit` counts the records returned.

        A read: nothing changes until `settle`. Run one leaser per sink.
        """
        if limit <= 0:
            return []
        async with self._lock:
            rows = await self._read(LEASE, {"sink": sink, "now": now,
                                            "limit": limit + len(exclude)})
        # decode only what is handed out (a message body is the costly part)
        return [leased_record(r) for r in rows if r[0] not in exclude][:limit]

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        """Record, durably, that a send of these records starts now (cleared by `settle`).

        After a crash mid-send the next lease shows `unsettled_send_at`, so a sink whose API
        has no idempotency key knows the outcome upstream is unknown and can wait before it
        looks the record up, instead of creating it a second time.
        """
        if not ids:
            return
        async with self._lock, self._write():
            await self._db.executemany(
                "UPDATE outbox SET sent_at = ? WHERE id = ? AND state = 0",
                [(now, rid) for rid in ids])

    async def lease_for_send(self, sink: str, limit: int, now: float,
                             exclude: Collection[int] = (),
                             since: float | None = None) -> list[OutboxRecord]:
        """`lease` and `mark_sent` of what it returns, in one transaction (one call on the
        database thread): what a forwarder about to send them asks for. With `since`, records
        marked sent after it (by this caller: under way) are skipped in SQL; `exclude` still
        applies."""
        return await self.settle_and_lease((), now, sink, limit, exclude=exclude, since=since)

    async def unmark_sent(self, ids: Sequence[int]) -> None:
        """These records were marked sent but never sent after all (a forwarder stopping
        with records it had leased ahead): their outcome is not unknown, nothing to wait for."""
        if not ids:
            return
        async with self._lock, self._write():
            await self._db.executemany(
                "UPDATE outbox SET sent_at = NULL WHERE id = ? AND state = 0",
                [(rid,) for rid in ids])

    async def settle(self, deliveries: Sequence[Delivery], now: float, *,
                     attempts: Sequence[Attempt] = (),
                     facts: Sequence[MessageFacts] = ()) -> None:
        """Apply sink outcomes, and append the attempt history of the same sends (`attempts`,
        first-seen `facts`, see buffer/attempts.py) in the same transaction. Unknown or
        already settled record ids are ignored."""
        await self.settle_and_lease(deliveries, now, "", 0, attempts=attempts, facts=facts)

    async def settle_and_lease(self, deliveries: Sequence[Delivery], now: float, sink: str,
                               limit: int, *, attempts: Sequence[Attempt] = (),
                               facts: Sequence[MessageFacts] = (),
                               exclude: Collection[int] = (),
                               since: float | None = None) -> list[OutboxRecord]:
        """`settle` (with history), then `lease_for_send` of `sink`, in one transaction: a
        forwarder's round. One call on the database thread and one commit (one fsync under
        synchronous=FULL) per round, however many records it settles and leases: at a drain
        of thousands a second that is what the outbox costs per record."""
        first: dict[int, Delivery] = {}
        for d in deliveries:
            first.setdefault(d.record_id, d)
        history = history_rows(attempts, facts)
        lease: dict[str, Any] = {"sink": sink, "now": now, "limit": limit + len(exclude)}
        if since is not None:  # what the caller marked itself is skipped in SQL
            # (a few more, for marks of ours not after `since`: a clock that stood or stepped back)
            lease |= {"since": since, "limit": limit + min(len(exclude), 8)}
        rows: list[Any] = []
        async with self._lock:
            await self._sync_used()
            if first or limit > 0 or any(params for _, params, _ in history):
                freed, rows = await self._in_thread(partial(
                    settle_and_lease_in_one, first=first, now=now, history=history,
                    lease=lease, exclude=exclude, limit=limit))
                self._used -= freed
            if self._prune_due(now):  # every few minutes, in a transaction of its own
                async with self._write():
                    self._used -= await self._maybe_prune(now)
        return [leased_record(r) for r in rows]

    def _prune_due(self, now: float) -> bool:
        return self._last_prune is None or now - self._last_prune >= PRUNE_INTERVAL_SECONDS

    async def _maybe_prune(self, now: float) -> int:
        """Forget delivered keys, closed episodes and their receipts past the retention;
        returns the tracked bytes freed."""
        if not self._prune_due(now):
            return 0
        self._last_prune = now
        return await prune(self._db, now - self.retention_seconds)
