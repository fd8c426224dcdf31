"""The relay's own small HTTP endpoints: page, /status, /metrics, /healthz, /readyz, /fleet.

Shaped like the gateway's (gateway/http.py) and sharing its JSON encoder, but with the relay's
figures: consumer lag, events in flight, accepted/retried/dead per upstream, the fleet.
"""

from __future__ import annotations

import html
import time
from typing import Any

from aiohttp import web

from gateway.http import dumps
from gateway.relay.fleet import fleet_text
from gateway.relay.relay import Relay


def snapshot(relay: Relay) -> dict[str, Any]:
    s = relay.stats
    c = relay.cfg.consumer
    problems = [] if relay.ready.is_set() else ["not connected to the backbone yet"]
    notes: list[str] = []
    if relay.ready.is_set() and not relay.connected:
        problems.append("NATS link lost: reconnecting (unacknowledged events go to other "
                        "relays after ack_wait)")
    for lim in relay.rate_limits.values():
        if not lim.shared:  # degraded, not down: shown, but /readyz stays ready
            notes.append(f"rate limit of {lim.upstream}: shared bucket unreachable "
                         f"({lim.fallback_reason}); this relay alone keeps "
                         f"{1.0 / lim.local.interval:g}/s")
    for name, u in s.by_upstream.items():
        if u.last_error and u.retried and not u.accepted:
            problems.append(f"upstream {name} is not accepting: {u.last_error}")
    return {
        "relay": relay.cfg.relay.name, "uptime_seconds": time.time() - relay.started_at,
        "stream": c.stream, "consumer": c.durable, "ready": relay.ready.is_set(),
        "lag": relay.consumer.get("lag"), "ack_pending": relay.consumer.get("ack_pending"),
        "redelivered": relay.consumer.get("redelivered"), "in_flight": relay.in_flight,
        "received": s.received, "acked": s.acked, "nacked": s.nacked, "dead": s.dead,
        "ignored": s.ignored,
        "upstreams": [{"name": n, "accepted": u.accepted, "retried": u.retried, "dead": u.dead,
                       "last_error": u.last_error} for n, u in s.by_upstream.items()],
        "rate_limits": [r.status() for r in relay.rate_limits.values()],
        "trace_steps_lost": relay.trace.lost,
        "fleet": relay.fleet.rows(), "problems": problems,
        "notes": notes,
    }


def metrics_text(s: dict[str, Any]) -> str:
    lines = []
    for name, help_text in (("lag", "events in the stream not yet delivered to any relay"),
                            ("ack_pending", "events handed out and not yet acknowledged"),
                            ("in_flight", "events this relay works on")):
        lines += [f"# HELP plantbridge_relay_{name} {help_text}",
                  f"# TYPE plantbridge_relay_{name} gauge",
                  f"plantbridge_relay_{name} {s[name] or 0}"]
    for name in ("accepted", "retried", "dead"):
        lines += [f"# HELP plantbridge_relay_{name}_total events {name} per upstream",
                  f"# TYPE plantbridge_relay_{name}_total counter"]
        lines += [f'plantbridge_relay_{name}_total{{upstream="{u["name"]}"}} {u[name]}'
                  for u in s["upstreams"]]
    lines += ["# HELP plantbridge_relay_rate_limit_shared 1 while the fleet-wide rate of an "
              "upstream is kept through the shared bucket, 0 in local fallback",
              "# TYPE plantbridge_relay_rate_limit_shared gauge"]
    lines += [f'plantbridge_relay_rate_limit_shared{{upstream="{r["upstream"]}"}} '
              f'{int(bool(r["shared"]))}' for r in s["rate_limits"]]
    lines += ["# HELP plantbridge_relay_rate_limit_wait_seconds_total time this relay waited "
              "for its turn", "# TYPE plantbridge_relay_rate_limit_wait_seconds_total counter"]
    lines += [f'plantbridge_relay_rate_limit_wait_seconds_total{{upstream="{r["upstream"]}"}} '
              f'{r["waited_seconds"]}' for r in s["rate_limits"]]
    lines += ["# HELP plantbridge_relay_gateway_heartbeat_age_seconds since a gateway's last "
              "heartbeat", "# TYPE plantbridge_relay_gateway_heartbeat_age_seconds gauge"]
    lines += [f'plantbridge_relay_gateway_heartbeat_age_seconds{{gateway="{g["gateway_id"]}"}} '
              f'{g["heartbeat_age_seconds"]:.1f}' for g in s["fleet"]
              if g["heartbeat_age_seconds"] is not None]
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[object]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                  for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def page(s: dict[str, Any]) -> str:
    e = html.escape
    problems = ("<p>All good.</p>" if not s["problems"] else
                "<ul>" + "".join(f"<li>{e(p)}</li>" for p in s["problems"]) + "</ul>")
    notes = "".join(f"<p>Note: {e(n)}</p>" for n in s["notes"])
    rates = _table(["upstream", "fleet rate /s", "shared", "granted shared", "granted local",
                    "waited s"],
                   [[r["upstream"], r["rate_per_second"], "yes" if r["shared"] else "FALLBACK",
                     r["granted_shared"], r["granted_local"], r["waited_seconds"]]
                    for r in s["rate_limits"]]) if s["rate_limits"] else ""
    ups = _table(["upstream", "accepted", "retried", "dead", "last error"],
                 [[u["name"], u["accepted"], u["retried"], u["dead"], u["last_error"] or "-"]
                  for u in s["upstreams"]])
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>PlantBridge relay {e(s['relay'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td,th{{border:1px solid #ccc;
padding:.25em .6em}} table{{border-collapse:collapse}}</style></head><body>
<h1>PlantBridge relay &middot; {e(s['relay'])}</h1>
<p>stream {e(s['stream'])}, consumer {e(s['consumer'])}: lag {s['lag']}, ack pending
{s['ack_pending']}, in flight here {s['in_flight']} &middot; <a href="/status">JSON</a>
&middot; <a href="/metrics">metrics</a> &middot; <a href="/fleet">fleet</a></p>
{problems}{notes}<h2>Upstreams</h2>{ups}{rates}<h2>Fleet</h2><pre>{e(fleet_text(s['fleet']))}</pre>
</body></html>"""


def build_relay_app(relay: Relay) -> web.Application:
    def _json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=dumps(data), status=status, content_type="application/json")

    async def current() -> dict[str, Any]:
        await relay.refresh()
        return snapshot(relay)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page(await current()), content_type="text/html")

    async def status(_: web.Request) -> web.Response:
        return _json(await current())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics_text(await current()).encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        s = await current()
        return _json({"ready": not s["problems"], "problems": s["problems"]},
                     200 if not s["problems"] else 503)

    async def fleet(req: web.Request) -> web.Response:
        rows = relay.fleet.rows()
        if req.query.get("format") == "json":
            return _json(rows)
        return web.Response(text=fleet_text(rows) + "\n", content_type="text/plain")

    app = web.Application()
    for path, handler in (("/", index), ("/status", status), ("/metrics", metrics),
                          ("/healthz", healthz), ("/readyz", readyz), ("/fleet", fleet)):
        app.router.add_get(path, handler)
    return app
