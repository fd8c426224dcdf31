"""Sending a leased batch the way every sink must: per episode in order, episodes in parallel.

Order matters only within an episode (a clear after its raise); different episodes, also of one
asset, never wait on each other, so one record the upstream keeps refusing holds back nothing
but its own episode. Cross-cutting, so it lives once: a sink only knows how to send one record.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Sequence

from buffer.statements import priority_of
from gateway.model import Delivery, OutboxRecord, Outcome

SendOne = Callable[[OutboxRecord], Awaitable[Delivery]]


async def send_in_episode_lanes(batch: Sequence[OutboxRecord], send_one: SendOne,
                                concurrency: int) -> list[Delivery]:
    """One Delivery per record, in batch order. After a RETRY, later records of the same
    episode in this batch are held as RETRY unsent, so a clear never overtakes its raise."""
    lanes: dict[str, list[OutboxRecord]] = {}
    for rec in batch:
        lanes.setdefault(rec.message.episode_id, []).append(rec)
    out: dict[int, Delivery] = {}
    limit = asyncio.Semaphore(concurrency)

    async def run_lane(records: list[OutboxRecord]) -> None:
        held: Delivery | None = None
        for rec in records:
            if held is not None:
                out[rec.id] = Delivery(rec.id, Outcome.RETRY, reason=(
                    f"held: earlier record {held.record_id} of episode "
                    f"{rec.message.episode_id!r} is to be retried"),
                    retry_after_seconds=held.retry_after_seconds)
                continue
            async with limit:
                d = await send_one(rec)
            out[rec.id] = d
            if d.outcome is Outcome.RETRY:
                held = d

    async with asyncio.TaskGroup() as tg:
        for records in lanes.values():
            tg.create_task(run_lane(records))
    return [out[rec.id] for rec in batch]


class ReadyHeads:
    """Leased heads of episode lanes waiting for a free request slot, most urgent first
    (priority, then age), so a critical raise leased after a handful of lesser records still
    takes the next free slot."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, OutboxRecord]] = []

    def push(self, records: Sequence[OutboxRecord]) -> None:
        for rec in records:
            heapq.heappush(self._heap, (int(priority_of(rec.message)), rec.id, rec))

    def pop(self) -> OutboxRecord:
        return heapq.heappop(self._heap)[2]

    def take_all(self) -> list[OutboxRecord]:
        out, self._heap = [r for _, _, r in self._heap], []
        return out

    def __len__(self) -> int:
        return len(self._heap)
