"""`plantbridge dead-letters`: see what an upstream refused for good, and send it again.

Typical use: an upstream refused the gateway's credentials (401) or a mapping was wrong; the
admin fixes the config, reloads, and requeues the dead letters. Safe while the daemon runs:
SQLite serialises the two writers, and a requeued record is delivered under its original
idempotency key (and, for SAP/Maximo, looked up before it is created).

`plantbridge outbox` (gateway/outbox_tools.py) lists, exports and drops any undelivered record;
this command stays for requeueing, which only dead letters need.
"""

from __future__ import annotations

from collections.abc import Sequence

from buffer.config import OutboxConfig
from buffer.store import OutboxStore
from gateway.config import PlantBridgeConfig
from gateway.messages import iso_time


async def manage(cfg: PlantBridgeConfig, requeue: Sequence[str], drop: Sequence[int],
                 sink: str | None) -> str:
    """List dead letters, or requeue (ids or "all") / drop (ids) some. Returns what to print."""
    buffer: OutboxConfig = cfg.buffer
    async with await buffer.build(cfg.gateway.state_dir) as store:
        if requeue:
            ids = await _ids(store, requeue, sink)
            n = await store.requeue_dead(ids)
            return f"requeued {n} dead letter(s); the daemon delivers them on its next round"
        if drop:
            n = await store.drop_dead(list(drop))
            return f"dropped {n} dead letter(s) for good"
        letters = await store.dead_letters(sink, limit=1000)
    if not letters:
        return "no dead letters"
    lines = [f"{'id':>6}  {'sink':<12} {'asset':<16} {'kind':<20} {'failed at':<24} reason"]
    lines += [f"{d.id:>6}  {d.sink:<12} {d.asset:<16} {d.kind:<20} {iso_time(d.failed_at):<24} "
              f"{d.reason}" for d in letters]
    lines.append(f"{len(letters)} dead letter(s). Fix the cause, then: plantbridge dead-letters "
                 "--config ... --requeue all (or ids). To keep them before dropping: "
                 "plantbridge outbox export --dead FILE; one event's story: plantbridge trace ID")
    return "\n".join(lines)


async def _ids(store: OutboxStore, requeue: Sequence[str], sink: str | None) -> list[int]:
    if list(requeue) == ["all"]:
        return [d.id for d in await store.dead_letters(sink, limit=1_000_000)]
    return [int(x) for x in requeue]
