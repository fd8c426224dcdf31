"""From a rule transition to the upstream messages it causes.

The idempotency key of a message is derived from the episode only, never from wall-clock time, so
the same transition re-evaluated after a crash maps onto the same outbox row (insert-or-ignore).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

from gateway.model import MessageKind, OutboxMessage, Priority, Transition, TransitionKind

DEDUP_KEY_PREFIX = "PB"


_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base32
_B32_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> two characters


# An episode's raise and its clear both derive the key (of the same episode, usually within
# seconds or minutes of each other): the clear finds it here. A miss costs ~1.1 us.
@functools.lru_cache(maxsize=4096)
def dedup_key(episode_id: str) -> str:
    """A deterministic external reference of at most 20 characters (SAP and Maximo allow 20):
    "PB" and the first 18 RFC 4648 base32 characters of the episode id's SHA-256, i.e. its
    first 90 bits, two characters per 10 bits (base64.b32encode is pure Python in 3.11 and
    cost more than the hash; tests/gateway/test_messages.py checks it gives the same)."""
    digest = hashlib.sha256(episode_id.encode()).digest()
    n = int.from_bytes(digest[:12], "big") >> 6  # the first 90 bits
    pairs = _B32_PAIRS
    return (DEDUP_KEY_PREFIX + pairs[n >> 80] + pairs[(n >> 70) & 1023]
            + pairs[(n >> 60) & 1023] + pairs[(n >> 50) & 1023] + pairs[(n >> 40) & 1023]
            + pairs[(n >> 30) & 1023] + pairs[(n >> 20) & 1023] + pairs[(n >> 10) & 1023]
            + pairs[n & 1023])


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last whole second formatted


_FIRST_SECOND = -62135596800.0  # 0001-01-01T00:00:00Z
_PAST_LAST_SECOND = 253402300800.0  # 10000-01-01T00:00:00Z


def iso_time(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z, exactly as
    `datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")` with "+00:00" as "Z"
    (microseconds rounded half to even, then cut to milliseconds). A burst of transitions
    shares its second, so the date part is formatted once per second, not per message."""
    global _second
    if not _FIRST_SECOND <= ts < _PAST_LAST_SECOND:  # as datetime: years 1..9999, or an error
        raise ValueError(f"time {ts!r} is out of range (years 1 to 9999)")
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    seconds = int(whole)
    if us >= 1_000_000:
        seconds, us = seconds + 1, us - 1_000_000
    elif us < 0:
        seconds, us = seconds - 1, us + 1_000_000
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{us // 1000:03d}Z"


def _fill(template: str, t: Transition) -> str:
    """Rule texts may name {asset}, {signal}, {value}, {rule_id}; anything else stays as written."""
    if "{" not in template:  # most long texts and many titles: nothing to fill
        return template
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
