"""`plantbridge outbox list | export | drop | downgrade`: look into the outbox beside the running
daemon (`downgrade --to N`, with the daemon stopped, takes the file back for an older release).

`list` shows what is not delivered yet (pending and dead letters); `export --dead FILE` writes
dead letters as JSON lines with their body and last error, so they can be kept or mailed before
they are dropped; `drop IDS` deletes undelivered records for good. Reads take no lock the
daemon holds (SQLite WAL); a drop is one short write transaction that SQLite serialises with
the daemon's own. A record dropped while the daemon is sending it may still arrive upstream.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from buffer.attempts import StoredRecord
from gateway.config import PlantBridgeConfig
from gateway.messages import iso_time

LIST_LIMIT = 100_000


async def records(cfg: PlantBridgeConfig, *, sink: str | None = None, asset: str | None = None,
                  dead: bool = False, bodies: bool = False) -> list[StoredRecord]:
    """Undelivered records of this gateway's outbox (only dead letters with `dead`)."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        return await store.records(sink=sink, asset=asset, dead=dead, bodies=bodies,
                                   limit=LIST_LIMIT)


async def acknowledge(cfg: PlantBridgeConfig) -> int:
    """Acknowledge what opening found damaged (salvage, WAL damage); returns how many."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        return await store.acknowledge_notices()


async def drop(cfg: PlantBridgeConfig, ids: Sequence[int]) -> int:
    """Delete these undelivered records for good; returns how many were there to delete."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        return await store.drop_records(ids)


async def downgrade(cfg: PlantBridgeConfig, target: int) -> tuple[int, Path]:
    """Take the outbox back to schema `target` for an older release; returns the version it
    was at and the file. Holds the daemon's lock meanwhile: refused (OutboxLocked) while the
    daemon runs, and it cannot start until this is done."""
    from buffer.opening import downgrade_file

    path = cfg.buffer.resolved_path(cfg.gateway.state_dir)
    return await downgrade_file(path, target), path


def as_dict(rec: StoredRecord) -> dict[str, Any]:
    """A record as JSON-able data: what `list --json` and `export` write."""
    out: dict[str, Any] = {
        "id": rec.id, "key": rec.key, "sink": rec.sink, "asset": rec.asset,
        "episode_id": rec.episode_id, "kind": rec.kind, "state": rec.state,
        "created_at": iso_time(rec.created_at), "attempts": rec.attempts,
        "last_error": rec.last_error or None,
        "failed_at": iso_time(rec.settled_at) if rec.state == "dead" and rec.settled_at else None,
        "next_attempt_at": iso_time(rec.next_attempt_at) if rec.state == "pending" else None,
        "receipt": rec.receipt,
    }
    if rec.body is not None:
        out["body"] = dict(rec.body)
    return out


def format_list(found: Sequence[StoredRecord]) -> str:
    """A table for a terminal, one record a line."""
    if not found:
        return "nothing undelivered"
    lines = [f"{'id':>6}  {'state':<7} {'sink':<12} {'asset':<16} {'kind':<19} "
             f"{'created at':<24} {'tries':>5}  last error"]
    lines += [f"{r.id:>6}  {r.state:<7} {r.sink:<12} {r.asset:<16} {r.kind:<19} "
              f"{iso_time(r.created_at):<24} {r.attempts:>5}  {r.last_error}".rstrip()
              for r in found]
    dead = sum(1 for r in found if r.state == "dead")
    lines.append(f"{len(found)} record(s), {dead} dead letter(s)")
    return "\n".join(lines)


def write_json_lines(found: Sequence[StoredRecord], path: Path) -> None:
    """Write records as JSON lines, atomically: a half-written export never replaces a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for rec in found:
                f.write(orjson.dumps(as_dict(rec), default=str) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
