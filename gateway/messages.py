"""From a rule transition to the upstream messages it causes.

The idempotency key of a message is derived from the episode only, never from wall-clock time, so
the same transition re-evaluated after a crash maps onto the same outbox row (insert-or-ignore).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.model import MessageKind, OutboxMessage, Priority, Transition, TransitionKind

DEDUP_KEY_PREFIX = "PB"


def dedup_key(episode_id: str) -> str:
    """A deterministic external reference of at most 20 characters (SAP and Maximo allow 20)."""
    digest = hashlib.sha256(episode_id.encode()).digest()
    return DEDUP_KEY_PREFIX + base64.b32encode(digest).decode()[:18]


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def _fill(template: str, t: Transition) -> str:
    """Rule texts may name {asset}, {signal}, {value}, {rule_id}; anything else stays as written."""
    value = "n/a" if t.value is None else f"{t.value:g}"
    try:
        return template.format(asset=t.asset, signal=t.signal, value=value, rule_id=t.rule_id)
    except (KeyError, IndexError, ValueError):
        return template


def canonical_body(t: Transition, site: str) -> dict[str, Any]:
    """The canonical maintenance request (raise) or status update (clear) for every sink."""
    key = dedup_key(t.episode_id)
    common: dict[str, Any] = {
        "site": site,
        "dedup_key": key,
        "episode_id": t.episode_id,
        "asset": t.asset,
        "signal": t.signal,
        "rule_id": t.rule_id,
        "severity": t.severity,
        "value": t.value,
        "reason": t.reason,
    }
    if t.kind is TransitionKind.RAISED:
        req = t.request
        return common | {
            "kind": "malfunction" if req.breakdown else "request",
            "title": _fill(req.title, t)[:200] or f"{t.rule_id} on {t.asset}",
            "long_text": _fill(req.long_text, t),
            "priority": req.priority,
            "failure_code": req.failure_code,
            "breakdown": req.breakdown,
            "raised_at": iso_time(t.ts),
        }
    return common | {"status": "cleared", "cleared_at": iso_time(t.ts)}


CRITICAL_SEVERITY = 1


def priority_of(t: Transition) -> Priority | None:
    """Delivery order between episodes: critical raises first, then other raises, then clears
    (None: the order the kind implies, see buffer/statements.py). A clear of a critical episode
    still waits for its raise: order within an episode holds whatever the priorities."""
    if t.kind is TransitionKind.RAISED and t.severity <= CRITICAL_SEVERITY:
        return Priority.CRITICAL_RAISE
    return None


def messages_for(t: Transition, sinks: Sequence[str], site: str) -> list[OutboxMessage]:
    """One message per sink. Keys: one per business intent and target, stable forever."""
    kind = (MessageKind.MAINTENANCE_REQUEST if t.kind is TransitionKind.RAISED
            else MessageKind.STATUS_UPDATE)
    body = canonical_body(t, site)
    priority = priority_of(t)
    intent = "request" if kind is MessageKind.MAINTENANCE_REQUEST else "cleared"
    return [
        OutboxMessage(
            key=f"{intent}:{body['dedup_key']}:{sink}",
            sink=sink,
            asset=t.asset,
            episode_id=t.episode_id,
            kind=kind,
            body=body,
            created_at=t.ts,
            priority=priority,
        )
        for sink in sinks
    ]
