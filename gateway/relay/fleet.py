"""The fleet view: every gateway seen on the backbone, its last heartbeat and its events.

Heartbeats arrive on core NATS, so every relay sees all of them; event counts are what this
relay forwarded (relays share the work, so each counts its own share).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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


class FleetView:
    def __init__(self, stale_after_seconds: float = 90.0) -> None:
        self._gateways: dict[str, GatewaySeen] = {}
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
        return True

    def event(self, gateway_id: str) -> None:
        self._get(gateway_id).events += 1

    def rows(self, now: float | None = None) -> list[dict[str, Any]]:
        t = time.time() if now is None else now
        out = []
        for g in sorted(self._gateways.values(), key=lambda g: (g.site, g.gateway_id)):
            age = None if g.last_heartbeat_at is None else t - g.last_heartbeat_at
            out.append({"gateway_id": g.gateway_id, "site": g.site, "area": g.area,
                        "version": g.version, "heartbeat_age_seconds": age,
                        "stale": age is None or age > self.stale_after_seconds,
                        "last_publish_at": g.last_publish_at, "published": g.published,
                        "retries": g.retries, "events_relayed": g.events})
        return out


def fleet_text(rows: list[dict[str, Any]]) -> str:
    """The fleet as a terminal table (`plantbridge relay --fleet`)."""
    if not rows:
        return "no gateway seen yet (heartbeats come every 30 s)"
    head = f"{'gateway':<20} {'site':<12} {'area':<10} {'heartbeat':>10} {'published':>9} " \
           f"{'relayed':>8}  state"
    lines = [head]
    for r in rows:
        age = r["heartbeat_age_seconds"]
        beat = "never" if age is None else f"{age:.0f} s ago"
        lines.append(f"{r['gateway_id']:<20} {r['site']:<12} {r['area']:<10} {beat:>10} "
                     f"{r['published']:>9} {r['events_relayed']:>8}  "
                     f"{'STALE' if r['stale'] else 'ok'}")
    return "\n".join(lines)
