"""Local HTTP endpoints: liveness, readiness, status (JSON and a page), Prometheus metrics.

Access: with `[http] token` set, every endpoint but `/healthz` needs `Authorization: Bearer
<token>`, or the login cookie that the page's tiny login form sets (HttpOnly, SameSite=Strict).
Requests from loopback are not exempt: on a shared edge box, loopback is not one person.
Without a token the endpoint may only listen on loopback (the config refuses anything else).
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import page_alarms
from gateway.identity_probe import status_lines
from rules.loader import describe_running

if TYPE_CHECKING:
    from gateway import page as asset_page

Snapshot = Callable[[], dict[str, Any]]
Refresh = Callable[[], Awaitable[None]]
# /episode/<id>: the episode page's HTML, or None for an unknown id (gateway/page_episode.py)
EpisodePage = Callable[[str], Awaitable[str | None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "plantbridge_login"
OPEN_PATHS = frozenset({"/healthz", "/login"})  # answered without a token

# Keys are not always plain `str`: rejection reasons are StrEnum members (orjson refuses
# subclasses of str as keys without this option), and a count may be keyed by an int.
_JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS


def dumps(data: Any) -> bytes:
    """The one JSON encoder of every endpoint: any key that reads as text is written as text."""
    return orjson.dumps(data, option=_JSON_OPTIONS)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def login_cookie_value(token: str) -> str:
    """What the login cookie holds: derived from the token, so the token itself never sits in
    a browser profile, and a new token logs every browser out."""
    return hmac.new(token.encode(), b"plantbridge page login", hashlib.sha256).hexdigest()


def _authorized(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(),
                                                login_cookie_value(token).encode())


def access_middleware(token: str) -> Middleware:
    """Refuse what carries neither the bearer token nor the login cookie: a person at the
    page is sent to the login form, a program gets 401 with a plain reason."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or _authorized(request, token):
            return await handler(request)
        if request.path == "/" and "text/html" in request.headers.get("Accept", ""):
            raise web.HTTPSeeOther("/login")
        return web.Response(
            status=401, body=dumps({"error": "this gateway needs a token: send "
                                    "'Authorization: Bearer <token>' (the token of [http] in "
                                    "its config), or log in at /login"}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="plantbridge"'})

    return guard


def build_app(snapshot: Snapshot, refresh: Refresh, token: str | None = None, *,
              series_of: asset_page.SeriesOf | None = None,
              episode_page: EpisodePage | None = None) -> web.Application:
    """`refresh` re-reads figures that live in storage, so every answer is current.
    `token`: None leaves every endpoint open (loopback only, see HttpConfig).
    `series_of`: the trends drawn on the asset cards; `episode_page`: /episode/<id>."""

    async def healthz(_: web.Request) -> web.Response:
        return _json({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        await refresh()
        s = snapshot()
        delays = s.get("delays", [])
        blocking = [p for p in s["problems"] if p not in delays]
        return _json({"ready": not blocking, "problems": blocking, "delays": delays},
                     200 if not blocking else 503)

    async def status(_: web.Request) -> web.Response:
        await refresh()
        s = snapshot()
        return _json(s | {"reload": s["reload"] | {"summary": _rules_line(s["reload"])}})

    async def metrics(_: web.Request) -> web.Response:
        # prometheus_client loads on the first scrape: a gateway nobody scrapes never pays for it
        from gateway.metrics import render

        await refresh()
        return web.Response(body=render(snapshot),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def page(request: web.Request) -> web.Response:
        from gateway import page as asset_page  # the page's renderer loads on the first view

        await refresh()
        chosen = {k: request.query[k] for k in asset_page.FILTER_KEYS if request.query.get(k)}
        return web.Response(text=render_page(snapshot(), series_of, chosen),
                            content_type="text/html")

    async def episode(request: web.Request) -> web.Response:
        ident = request.match_info["ident"]
        text = await episode_page(ident) if episode_page is not None else None
        if text is None:
            return web.Response(text=f"<!doctype html><p>No episode {html.escape(ident)} is "
                                "known to this gateway. <a href='/'>Back</a></p>", status=404,
                                content_type="text/html")
        return web.Response(text=text, content_type="text/html")

    async def login_form(_: web.Request) -> web.Response:
        return web.Response(text=_login_page(""), content_type="text/html")

    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = str(form.get("token", "")).strip()
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            return web.Response(text=_login_page("That token is not the one in this gateway's "
                                                 "[http] config."), status=401,
                                content_type="text/html")
        back = web.HTTPSeeOther("/")
        back.set_cookie(COOKIE, login_cookie_value(token), httponly=True, samesite="Strict",
                        path="/")
        raise back

    app = web.Application(middlewares=[access_middleware(token)] if token is not None else [])
    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/episode/{ident:.+}", episode)
    if token is not None:
        app.router.add_get("/login", login_form)
        app.router.add_post("/login", login)
    return app


def _login_page(error: str) -> str:
    note = f'<p class="bad">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>PlantBridge login</title>
<style>body{{font-family:sans-serif;margin:2em}} .bad{{color:#a40000}}</style></head><body>
<h1>PlantBridge</h1><p>This gateway's page needs its access token ([http] token).</p>{note}
<form method="post" action="/login"><input type="password" name="token" autofocus size="40"
aria-label="token"> <button type="submit">Log in</button></form></body></html>"""


def _rules_line(rl: dict[str, Any]) -> str:
    """The running rule counts in the words of the log's start-up line (`describe_running`;
    without pattern rules those of `check`)."""
    return describe_running(int(rl.get("rules", 0)), int(rl.get("instances", 0)),
                            int(rl.get("pattern_rules", 0)), int(rl.get("pattern_instances", 0)))


class _Html(str):
    """A cell that is already HTML (a link we built from escaped parts)."""


def _episode_link(episode_id: str, text: str) -> _Html:
    from gateway import page as asset_page  # as in `render_page`: loaded with the first view

    return _Html(f'<a href="{html.escape(asset_page.episode_href(episode_id))}">'
                 f"{html.escape(text)}</a>")


def _row(*cells: object, cls: str = "") -> str:
    tds = "".join(f"<td>{c if isinstance(c, _Html) else html.escape(str(c))}</td>"
                  for c in cells)
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


def age_words(seconds: float | None) -> str:
    """An age as a person reads it: 45 s, 12 min, 3.5 h."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _probe_words(probe: dict[str, Any] | None) -> str:
    if not probe:
        return "not probed yet"
    return "ok" if probe["ok"] else f"FAILED: {probe['reason']}"


def _table(title: str, heads: tuple[str, ...], rows: str) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    return f"<h2>{html.escape(title)}</h2><table><tr>{th}</tr>{rows}</table>"


def render_page(s: dict[str, Any], series_of: asset_page.SeriesOf | None = None,
                chosen: dict[str, str] | None = None) -> str:
    """The at-a-glance page for the plant IT admin: what is wrong first, then what runs and
    what waits. Every table says "none" rather than vanish, so an empty one is not a doubt."""
    from gateway import page as asset_page  # the renderer (and svg) load with the first view

    e = html.escape
    problems = s["problems"]
    head = ('<p class="allgood">All good: every source connected, every upstream reachable, '
            "nothing waiting too long.</p>" if not problems else
            f"<div class='problems'><h2>{len(problems)} problem(s)</h2><ul>"
            + "".join(f"<li class='delay'>{e(p)} <em>(delayed, not lost)</em></li>"
                      if p in s.get("delays", ()) else f"<li>{e(p)}</li>" for p in problems)
            + "</ul></div>")
    src = "".join(_row(x["name"], x["type"], x["state"], x["detail"], x["samples"],
                       ", ".join(f"{k}: {v}" for k, v in x["rejected"].items()) or "-",
                       cls="ok" if x["state"] == "connected" else "bad")
                  for x in s["sources"]) or _row("no sources configured", *[""] * 5)
    o = s["outbox"]
    ups = "".join(_row(u["name"], _probe_words(u.get("probe")), u["breaker"],
                       u.get("pending", o.get("pending", {}).get(u["name"], 0)),
                       age_words(u.get("oldest_pending_age_seconds")),
                       u.get("dead", o.get("dead", {}).get(u["name"], 0)), u["accepted"],
                       u["retried"], u["last_error"] or "-",
                       cls="bad" if _upstream_bad(u) else "ok")
                  for u in s["upstreams"]) or _row("no upstreams configured", *[""] * 8)
    eps = "".join(_row(x["asset"], _episode_link(x["episode_id"], x["rule_id"]),
                       x.get("severity", "-"),
                       _value(x.get("value")), x.get("reason") or "-", x["raised_at"],
                       request_ids(x), cls="open")
                  for x in s["open_episodes"]) or _row("none open", *[""] * 6)
    dead = "".join(_row(x["id"], x["sink"], x["asset"], x["kind"], x["reason"], x["failed_at"],
                        cls="bad")
                   for x in s.get("dead_letters", [])) or _row("none", *[""] * 5)
    recent = "".join(_row(x["time"], x["kind"], x["asset"],
                          _episode_link(x["episode_id"], x["rule_id"]), x["reason"])
                     for x in reversed(s["recent_transitions"])) or _row("none yet", *[""] * 4)
    rl = s["reload"]
    reload_line = (f"last reload failed at {rl['at']}: {rl['error']}" if rl["error"]
                   else f"config loaded at {rl['at']}: {_rules_line(rl)}")
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="5"></noscript>
<title>PlantBridge {e(s['site'])}</title>
<style>body{{font-family:sans-serif;margin:1.2em;font-size:15px}}
h1{{margin:.2em 0}} h2{{font-size:1.15em;margin:1em 0 .3em}}
table{{border-collapse:collapse;margin-bottom:.6em}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}
th{{background:#f2f2f2}} tr.bad{{background:#fde2e1}} tr.ok{{background:#eefbea}}
tr.open{{background:#fff4d6}}
.problems{{border:3px solid #c62828;background:#fde2e1;padding:.2em 1em;margin:.6em 0}}
.problems h2{{color:#a40000;margin:.3em 0}} .problems li{{font-size:1.05em;margin:.2em 0}}
.problems li.delay{{color:#6d4c00}} .problems em{{font-size:.85em}}
.allgood{{border:3px solid #2e7d32;background:#eefbea;padding:.6em 1em;font-size:1.1em}}
.meta{{color:#555}}{asset_page.CSS}</style></head><body>
<h1>PlantBridge &middot; {e(s['site'])}</h1>
<div id="stale" class="stale-page hidden"></div>
<div id="live-head">{head}
<p class="meta">up {age_words(s['uptime_seconds'])} &middot; {e(reload_line)} &middot;
<a href="/status">JSON</a> &middot; <a href="/metrics">metrics</a></p></div>
{asset_page.filters(list(s.get("assets") or ()), chosen or {}) if s.get("assets") else ""}
<div id="live">{asset_page.assets_section(s, series_of, chosen)}
{page_alarms.section(s.get("alarms"))}
{_table("Open episodes (conditions raised, not cleared)",
        ("asset", "rule", "severity", "value", "why", "raised", "upstream id"), eps)}
{_table("Dead letters (refused for good; fix, then: plantbridge dead-letters --requeue ID)",
        ("id", "upstream", "asset", "kind", "reason", "when"), dead)}
{_table("Upstreams", ("name", "probe", "breaker", "pending", "oldest pending", "dead",
                      "accepted", "retried", "last error"), ups)}
{"".join(f"<p>{e(line)}</p>" for line in status_lines(s.get("identity")))}
{_table("Sources", ("name", "type", "state", "detail", "samples", "rejected"), src)}
<p>Outbox: {_size(o.get('bytes', 0))} of {_size(o.get('budget_bytes'))} budget,
{_size(o.get('file_bytes', 0))} on disk;
oldest pending {age_words(o.get('oldest_pending_age_seconds') or 0)}.</p>
{_table("Recent transitions", ("time", "kind", "asset", "rule", "why"), recent)}
</div><script>{asset_page.SCRIPT}</script>
</body></html>"""


def request_ids(episode: dict[str, Any]) -> str:
    """Per upstream: the id it gave the request, or why there is none yet."""
    words = {"pending": "waiting to be delivered", "dead": "REFUSED (see dead letters)"}
    said = [f"{k}: {v}" for k, v in (episode.get("receipts") or {}).items()]
    said += [f"{k}: {words.get(v, v)}" for k, v in (episode.get("undelivered") or {}).items()]
    if not said and episode.get("held_back"):
        return f"held back: {episode['held_back']}, no request sent"
    return ", ".join(said) or "not yet accepted"


def _upstream_bad(u: dict[str, Any]) -> bool:
    probe = u.get("probe") or {}
    return bool(u["failing"] or u["breaker"] != "closed" or probe.get("ok") is False
                or u.get("dead"))


def _value(v: object) -> str:
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
