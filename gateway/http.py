"""Local HTTP endpoints: liveness, readiness, status (JSON and a page), Prometheus metrics."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from gateway.config import describe_rules
from gateway.metrics import render

Snapshot = Callable[[], dict[str, Any]]
Refresh = Callable[[], Awaitable[None]]


# Keys are not always plain `str`: rejection reasons are StrEnum members (orjson refuses
# subclasses of str as keys without this option), and a count may be keyed by an int.
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    """The one JSON encoder of every endpoint: any key that reads as text is written as text."""
    return orjson.dumps(data, option=_JSON_OPTIONS)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def build_app(snapshot: Snapshot, refresh: Refresh) -> web.Application:
    """`refresh` re-reads figures that live in storage, so every answer is current."""

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        await refresh()
        s = snapshot()
        problems = s["problems"]
        return _json({"ready": not problems, "problems": problems}, 200 if not problems else 503)

    async def status(_: web.Request) -> web.Response:
        await refresh()
        s = snapshot()
        return _json(s | {"reload": s["reload"] | {"summary": _rules_line(s["reload"])}})

    async def metrics(_: web.Request) -> web.Response:
        await refresh()
        return web.Response(body=render(snapshot),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def page(_: web.Request) -> web.Response:
        await refresh()
        return web.Response(text=render_page(snapshot()), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


def _rules_line(rl: dict[str, Any]) -> str:
    """The rule counts in the same words as `check` and the log (see `describe_rules`)."""
    return describe_rules(int(rl.get("rules", 0)), int(rl.get("instances", 0)),
                          int(rl.get("pattern_rules", 0)))


def _row(*cells: object, cls: str = "") -> str:
    tds = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
    return f'<tr class="{cls}">{tds}</tr>'


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_page(s: dict[str, Any]) -> str:
    """The at-a-glance page for the plant IT admin: what runs, what waits, what is wrong."""
    e = html.escape
    problems = s["problems"]
    head = ('<p class="ok">All good.</p>' if not problems else
            "<ul class='bad'>" + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul>")
    src = "".join(_row(x["name"], x["type"], x["state"], x["detail"], x["samples"],
                       ", ".join(f"{k}: {v}" for k, v in x["rejected"].items()) or "-",
                       cls="ok" if x["state"] == "connected" else "bad")
                  for x in s["sources"])
    o = s["outbox"]
    ups = "".join(_row(u["name"], u["breaker"], o.get("pending", {}).get(u["name"], 0),
                       o.get("dead", {}).get(u["name"], 0), u["accepted"], u["retried"],
                       u["last_error"] or "-",
                       cls="bad" if u["failing"] or u["breaker"] != "closed" else "ok")
                  for u in s["upstreams"])
    eps = "".join(_row(x["asset"], x["rule_id"], x["raised_at"], x["episode_id"])
                  for x in s["open_episodes"]) or _row("none open", "", "", "")
    recent = "".join(_row(x["time"], x["kind"], x["asset"], x["rule_id"], x["reason"])
                     for x in reversed(s["recent_transitions"])) or _row("none yet", "", "", "",
                                                                          "")
    rl = s["reload"]
    reload_line = (f"last reload failed at {rl['at']}: {rl['error']}" if rl["error"]
                   else f"config loaded at {rl['at']}: {_rules_line(rl)}")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>PlantBridge {e(s['site'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}
table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}} .bad{{background:#fde2e1}}
.ok{{color:#17612a}} tr.ok{{background:#eefbea;color:inherit}}</style></head><body>
<h1>PlantBridge &middot; {e(s['site'])}</h1>
<p>up {s['uptime_seconds']:.0f} s &middot; {e(reload_line)} &middot;
<a href="/status">JSON</a> &middot; <a href="/metrics">metrics</a></p>
{head}
<h2>Sources</h2><table><tr><th>name</th><th>type</th><th>state</th><th>detail</th>
<th>samples</th><th>rejected</th></tr>{src}</table>
<h2>Upstreams</h2><table><tr><th>name</th><th>breaker</th><th>pending</th><th>dead</th>
<th>accepted</th><th>retried</th><th>last error</th></tr>{ups}</table>
<p>Outbox: {_size(o.get('bytes', 0))} of {_size(o.get('budget_bytes'))} budget,
{_size(o.get('file_bytes', 0))} on disk;
oldest pending {o.get('oldest_pending_age_seconds') or 0:.0f} s.</p>
<h2>Open episodes</h2><table><tr><th>asset</th><th>rule</th><th>raised</th><th>episode</th></tr>
{eps}</table>
<h2>Recent transitions</h2><table><tr><th>time</th><th>kind</th><th>asset</th><th>rule</th>
<th>why</th></tr>{recent}</table></body></html>"""
