"""The fleet view: every gateway seen on the backbone, its last heartbeat and its events.

Heartbeats arrive on core NATS, so every relay sees all of them; event counts are what this
relay forwarded (relays share the work, so each counts its own share). A heartbeat also says
what the gateway has open (episodes) and still has to send (its outbox backlog per upstream);
those figures are as old as the heartbeat: a gateway is stale when no heartbeat came for three
of its own intervals (it says its interval; 30 s when it does not), and its figures are shown
with that age.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class GatewaySeen:
    gateway_id: str
    site: str = ""
    area: str = ""
    version: str = ""
    last_heartbeat_at: float | None = None
    last_publish_at: float | None = None
    published: int = 0  # as the gateway says in its heartbeat
    retries: int = 0
    events: int = 0  # forwarded by this relay
    interval_seconds: float | None = None  # the gateway's heartbeat interval, as it says
    open_episodes: int | None = None  # None: the gateway does not report it (older version)
    open: list[dict[str, Any]] = field(default_factory=list)  # the first few open episodes
    backlog: dict[str, int] = field(default_factory=dict)  # undelivered records per upstream
    dead: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_seconds: float | None = None


STALE_AFTER_BEATS = 3  # heartbeats missed in a row before a gateway is called stale
DEFAULT_INTERVAL_SECONDS = 30.0


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _counts(v: object) -> dict[str, int]:
    if not isinstance(v, dict):
        return {}
    return {str(k): int(n) for k, n in v.items() if isinstance(n, int) and n >= 0}


class FleetView:
    def __init__(self, stale_after_seconds: float | None = None) -> None:
        self._gateways: dict[str, GatewaySeen] = {}
        # fixed, or (None) three of each gateway's own heartbeat intervals
        self.stale_after_seconds = stale_after_seconds

    def _get(self, gateway_id: str) -> GatewaySeen:
        return self._gateways.setdefault(gateway_id, GatewaySeen(gateway_id))

    def heartbeat(self, subject: str, data: bytes, now: float | None = None) -> bool:
        """Take a heartbeat; False (and nothing changed) when it is not one we can read."""
        try:
            doc: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        tokens = subject.split(".")
        gid = doc.get("gateway_id") if isinstance(doc, dict) else None
        if not isinstance(gid, str) or not gid or len(tokens) < 5:
            return False
        g = self._get(gid)
        g.site = str(doc.get("site") or tokens[1])
        g.area, g.version = str(doc.get("area") or ""), str(doc.get("version") or "")
        g.last_heartbeat_at = time.time() if now is None else now
        last = doc.get("last_publish_at")
        g.last_publish_at = float(last) if isinstance(last, int | float) else g.last_publish_at
        g.published = int(doc.get("published") or 0)
        g.retries = int(doc.get("retries") or 0)
        g.interval_seconds = _num(doc.get("interval_seconds"))
        opened = doc.get("open_episodes")
        g.open_episodes = opened if isinstance(opened, int) and opened >= 0 else None
        listed = doc.get("open")
        g.open = [e for e in listed if isinstance(e, dict)][:20] if isinstance(listed, list) \
            else []
        g.backlog, g.dead = _counts(doc.get("backlog")), _counts(doc.get("dead"))
        g.oldest_pending_age_seconds = _num(doc.get("oldest_pending_age_seconds"))
        return True

    def stale_after(self, g: GatewaySeen) -> float:
        if self.stale_after_seconds is not None:
            return self.stale_after_seconds
        return STALE_AFTER_BEATS * (g.interval_seconds or DEFAULT_INTERVAL_SECONDS)

    def event(self, gateway_id: str) -> None:
        self._get(gateway_id).events += 1

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        t = time.time() if now is None else now
        out = []
        for g in sorted(self._gateways.values(), key=lambda g: (g.site, g.gateway_id)):
            age = None if g.last_heartbeat_at is None else t - g.last_heartbeat_at
            out.append({"gateway_id": g.gateway_id, "site": g.site, "area": g.area,
                        "version": g.version, "heartbeat_age_seconds": age,
                        "stale": age is None or age > self.stale_after(g),
                        "stale_after_seconds": self.stale_after(g),
                        "last_publish_at": g.last_publish_at, "published": g.published,
                        "retries": g.retries, "events_relayed": g.events,
                        "open_episodes": g.open_episodes, "open": g.open,
                        "backlog": g.backlog, "backlog_total": sum(g.backlog.values()),
                        "dead": g.dead, "oldest_pending_age_seconds":
                            g.oldest_pending_age_seconds})
        return out


def fleet_text(rows: list[dict[str, Any]]) -> str:
    """The fleet as a terminal table (`plantbridge relay --fleet`)."""
    if not rows:
        return "no gateway seen yet (heartbeats come every 30 s)"
    head = f"{'gateway':<20} {'site':<12} {'area':<10} {'heartbeat':>10} {'open':>5} " \
           f"{'backlog':>8} {'oldest':>8} {'published':>9} {'relayed':>8}  state"
    lines = [head]
    for r in rows:
        age = r["heartbeat_age_seconds"]
        beat = "never" if age is None else f"{age:.0f} s ago"
        opened = "?" if r.get("open_episodes") is None else str(r["open_episodes"])
        oldest = r.get("oldest_pending_age_seconds")
        state = "ok"
        if r["stale"]:  # what it said is as old as its last heartbeat: say so
            state = "STALE (no heartbeat for " + (
                "ever)" if age is None else f"{age:.0f} s; figures as of then)")
        lines.append(f"{r['gateway_id']:<20} {r['site']:<12} {r['area']:<10} {beat:>10} "
                     f"{opened:>5} {r.get('backlog_total', 0):>8} "
                     f"{'-' if oldest is None else f'{oldest:.0f} s':>8} "
                     f"{r['published']:>9} {r['events_relayed']:>8}  {state}")
    return "\n".join(lines)
