"""The asset-first part of the status page: filters and one card per asset (HTML).

A card says the asset's state by colour AND word (a colour-blind engineer and a grey-scale
print read the word), its open conditions with value, since when, and each upstream's id as a
link into the EAM (the upstream's `record_url`), and a 30-minute trend of each rule signal with
its alarm and clear levels and the raise/clear marks (gateway/svg.py).

Refresh: the page fetches itself every few seconds and swaps the `#live` parts in place (see
`SCRIPT`). Chosen over a meta refresh because the document stays: scroll position, an open
filter and a selection survive without bookkeeping, and a gateway that stops answering is
said on the page instead of leaving a browser error. Without JavaScript a <noscript> meta
refresh reloads the page (and loses the scroll, as before). Filters are query parameters
(`?state=raised&line=L2`), applied by the server: a link keeps them, hidden cards cost nothing.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from gateway.svg import Chart, ChartMark, Column, render
from gateway.trends import Series

SeriesOf = Callable[[str, str, float, float], Series]
TREND_WINDOW_SECONDS = 1800.0
MAX_CHARTS = 60  # trends per page (about 5 KiB each)

STATE_CLASS = {"raised": "raised", "pending": "pending", "bad quality": "badq",
               "no data": "nodata", "shelved": "muted", "muted": "muted", "normal": "normal"}

CSS = """
.filters{display:flex;flex-wrap:wrap;gap:.4em 1em;align-items:center;margin:.6em 0;
 padding:.4em .6em;background:#f2f2f2;border-radius:4px}
.filters label{font-size:.95em} .filters select{font-size:1em;padding:.15em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.8em;
 margin:.4em 0 1em}
.card{border:1px solid #bbb;border-left:10px solid #9e9e9e;border-radius:4px;padding:.4em .7em;
 background:#fff}
.card h3{margin:.1em 0 .2em;font-size:1.15em;display:flex;justify-content:space-between;
 gap:.5em;align-items:baseline}
.card .where{color:#555;font-size:.85em;font-weight:normal}
.badge{display:inline-block;padding:.05em .5em;border-radius:3px;font-size:.85em;
 font-weight:bold;text-transform:uppercase;letter-spacing:.03em;white-space:nowrap}
.card.raised{border-left-color:#c62828;background:#fff5f5}
.raised .badge.state{background:#c62828;color:#fff}
.card.pending{border-left-color:#ef6c00} .pending .badge.state{background:#ef6c00;color:#fff}
.card.badq{border-left-color:#6a1b9a} .badq .badge.state{background:#6a1b9a;color:#fff}
.card.nodata{border-left-color:#616161;background:#f5f5f5}
.nodata .badge.state{background:#616161;color:#fff}
.card.muted{border-left-color:#1565c0} .muted .badge.state{background:#bbdefb;color:#0d47a1}
.card.normal{border-left-color:#2e7d32} .normal .badge.state{background:#e8f5e9;color:#1b5e20}
.cond{margin:.3em 0;padding:.3em .4em;background:#fde2e1;border-radius:3px;font-size:.95em}
.cond .why{font-weight:bold} .cond a{color:#0d47a1} .cond.wait{background:#ffe9cc}
.sig .now{font-size:1.25em;font-weight:bold;color:#000}
.sig{margin:.35em 0 .1em;font-size:.85em;color:#333}
.sig .sigstate{font-weight:bold;color:#6a1b9a}
svg.trend{width:100%;height:auto;display:block}
.stale-page{background:#fff3cd;border:2px solid #ef6c00;padding:.3em .6em}
.hidden{display:none}
"""

SCRIPT = """
(function(){
  // Filters live in the link (?state=raised&line=L2): a reload, a bookmark or a link sent to
  // a colleague shows the same cards. The server filters, so hidden cards cost nothing.
  function query(){var q=new URLSearchParams();
    document.querySelectorAll('.filters select').forEach(function(s){
      if(s.value)q.set(s.id.slice(2),s.value);});
    var t=q.toString(); return t?'?'+t:'';}
  var refreshed=0;
  function refresh(){
    fetch(location.pathname+location.search,
          {headers:{'Accept':'text/html'},credentials:'same-origin'})
    .then(function(r){if(!r.ok)throw new Error('HTTP '+r.status); return r.text()})
    .then(function(t){
      var d=new DOMParser().parseFromString(t,'text/html');
      ['live-head','live'].forEach(function(id){
        var fresh=d.getElementById(id), old=document.getElementById(id);
        if(fresh&&old)old.replaceWith(fresh);});
      document.body.dataset.refreshed=String(++refreshed);  // for tests, and curious eyes
      document.getElementById('stale').classList.add('hidden');})
    .catch(function(e){var s=document.getElementById('stale');
      s.textContent='This page is not current: the gateway did not answer ('+e.message+
        '). Retrying every 5 s.'; s.classList.remove('hidden');});
  }
  document.addEventListener('change',function(ev){
    if(!ev.target.closest||!ev.target.closest('.filters'))return;
    history.replaceState(null,'',location.pathname+query()); refresh();});
  setInterval(refresh,5000);
})();
"""


def _when(iso: str | None, now: float | None = None) -> str:
    """An ISO time as HH:MM:SS (read by the clock on the wall), with its date when it is not
    today's (UTC, as every time on the page)."""
    if not iso:
        return "-"
    if len(iso) < 19:
        return iso
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
    return iso[11:19] if iso[:10] == today else f"{iso[:10]} {iso[11:19]}"


def _value(v: object) -> str:
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def episode_href(episode_id: str) -> str:
    return "/episode/" + quote(episode_id, safe="")


def _condition(c: Mapping[str, Any]) -> str:
    e = html.escape
    ups = []
    for u in c.get("upstreams", ()):
        if u.get("receipt"):
            ident = e(str(u["receipt"]))
            ident = (f'<a class="record" href="{e(u["url"])}" target="_blank" '
                     f'rel="noopener">{ident}</a>' if u.get("url") else ident)
            status = f" ({e(str(u['status']))})" if u.get("status") else ""
            ups.append(f"{e(u['sink'])}: {ident}{status}")
        else:
            words = {"pending": "waiting to be delivered", "dead": "REFUSED (dead letter)"}
            ups.append(f"{e(u['sink'])}: {e(words.get(str(u['status']), str(u['status'])))}")
    eid = str(c.get("episode_id") or "")
    parts = "".join(f'<br><span class="parts">{e(str(p))}</span>' for p in c.get("parts") or ())
    return (f'<div class="cond"><a href="{e(episode_href(eid))}"><span class="why">'
            f'{e(str(c.get("rule_id")))}</span></a> &middot; value {e(_value(c.get("value")))} '
            f'&middot; since {e(_when(c.get("raised_at")))} &middot; severity '
            f'{e(_value(c.get("severity")))}<br>{e(str(c.get("reason") or ""))}<br>'
            f'{" &middot; ".join(ups) or _none_sent(c)}{parts}</div>')


def _none_sent(c: Mapping[str, Any]) -> str:
    held = c.get("held_back")
    return f"held back: {html.escape(str(held))}, no request sent" if held else "not yet accepted"


def chart_of(series: Series, alarm: list[float], clear: list[float], *, width: int = 320,
             height: int = 70) -> str:
    # drawn at the middle of its bucket: its samples came some time within it
    half = series.bucket_seconds / 2
    columns = [Column(min(b.start + half, series.until), b.low, b.high, b.last)
               for b in series.buckets]
    marks = [ChartMark(m.ts, m.kind, f"{m.kind} {m.rule_id} at {_clock(m.ts)}",
                       href=episode_href(m.episode_id)) for m in series.marks]
    return render(Chart(series.since, series.until, columns, alarm, clear, marks, width, height,
                        title=f"{series.asset} {series.signal}",
                        extra={"asset": series.asset, "signal": series.signal},
                        axis=(f"{_clock(series.since)}", f"{_clock(series.until)}")))


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(ts))


def _card(card: Mapping[str, Any], series_of: SeriesOf | None, now: float,
          budget: list[int]) -> str:
    e = html.escape
    state = str(card["state"])
    where = " · ".join(str(x) for x in (card.get("line"), card.get("area")) if x)
    conds = "".join(_condition(c) for c in card.get("conditions", ()))
    if state == "pending" and card.get("pending_since"):
        since = _when(card["pending_since"])
        when = (f"; raises at {_when(card['raises_at'])} unless it recovers"
                if card.get("raises_at") else "")
        conds += (f'<div class="cond wait">condition holds since {e(since)}, waiting for its '
                  f"on-delay{e(when)}</div>")
    sigs = []
    for s in card.get("signals", ()):
        st = "" if s["state"] == "normal" else f' <span class="sigstate">{e(s["state"])}</span>'
        last = f" · last sample {_when(s.get('last_sample_at'))}" if s.get("last_sample_at") \
            else " · no sample yet"
        now_value = ("" if s.get("value") is None
                     else f' <span class="now">{e(_value(s["value"]))}</span>')
        sigs.append(f'<div class="sig">{e(s["signal"])}{now_value}{st}{e(last)}</div>')
        budget[0] -= 1
        if series_of is not None and budget[0] >= 0:
            series = series_of(str(card["asset"]), s["signal"], now - TREND_WINDOW_SECONDS, now)
            sigs.append(chart_of(series, list(s.get("alarm", ())), list(s.get("clear", ()))))
    return (f'<section class="card {STATE_CLASS.get(state, "normal")}" '
            f'data-asset="{e(str(card["asset"]))}" data-state="{e(state)}" '
            f'data-line="{e(str(card.get("line") or ""))}" '
            f'data-area="{e(str(card.get("area") or ""))}">'
            f'<h3><span>{e(str(card["asset"]))} <span class="where">{e(where)}</span></span>'
            f'<span class="badge state">{e(state)}</span></h3>{conds}{"".join(sigs)}</section>')


def _select(name: str, label: str, options: list[str], chosen: str) -> str:
    e = html.escape
    opts = "".join(f'<option value="{e(o)}"{" selected" if o == chosen else ""}>{e(o)}</option>'
                   for o in options)
    return (f'<label>{e(label)} <select id="f-{name}"><option value="">all</option>{opts}'
            "</select></label>")


FILTER_KEYS = ("state", "line", "area")


def filters(cards: Sequence[Mapping[str, Any]], chosen: Mapping[str, str]) -> str:
    """State, line and area filters (line and area: the values present, if any)."""
    lines = sorted({str(c["line"]) for c in cards if c.get("line")})
    areas = sorted({str(c["area"]) for c in cards if c.get("area")})
    parts = [_select("state", "state", list(STATE_CLASS), chosen.get("state", ""))]
    if lines:
        parts.append(_select("line", "line", lines, chosen.get("line", "")))
    if areas:
        parts.append(_select("area", "area", areas, chosen.get("area", "")))
    return f'<div class="filters">Show: {"".join(parts)}</div>'


def chosen_cards(cards: Sequence[Mapping[str, Any]],
                 chosen: Mapping[str, str]) -> list[Mapping[str, Any]]:
    return [c for c in cards if all(not chosen.get(k) or str(c.get(k) or "") == chosen[k]
                                    for k in FILTER_KEYS)]


def flood_banner(flood: object) -> str:
    """The `flood` key (another component's alarm-flood state), when present and active: its
    own words (`message`), else its scalar fields. Absent or inactive: nothing."""
    if not flood or (isinstance(flood, Mapping) and flood.get("active") is False):
        return ""
    if isinstance(flood, Mapping):
        words = str(flood.get("message") or ", ".join(
            f"{k}: {v}" for k, v in flood.items() if isinstance(v, str | int | float)))
    else:
        words = str(flood)
    return f'<div class="problems flood"><h2>Alarm flood</h2><p>{html.escape(words)}</p></div>'


def assets_section(s: Mapping[str, Any], series_of: SeriesOf | None,
                   chosen: Mapping[str, str] | None = None) -> str:
    """The cards the filters let through; trends for the first MAX_CHARTS signals (cards with
    a problem come first), so a site of a thousand assets stays a page, not megabytes."""
    every = list(s.get("assets") or ())
    if not every:
        return flood_banner(s.get("flood"))
    chosen = chosen or {}
    cards = chosen_cards(every, chosen)
    now = float(s.get("now") or time.time())
    counts: dict[str, int] = {}
    for c in every:
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    summary = ", ".join(f"{counts[k]} {k}" for k in STATE_CLASS if k in counts)
    shown = "" if len(cards) == len(every) else f"{len(cards)} shown of "
    budget = [MAX_CHARTS]
    body = "".join(_card(c, series_of, now, budget) for c in cards)
    note = ("" if budget[0] >= 0 else f'<p class="meta">Trends are drawn for the first '
            f"{MAX_CHARTS} signals on this page: filter by state, line or area to see "
            "the others.</p>")
    if not cards:
        body = "<p>No asset matches this filter.</p>"
    return (f'{flood_banner(s.get("flood"))}<h2>Assets ({shown}{len(every)}: '
            f'{html.escape(summary)})</h2>{note}<p class="meta">Times in UTC. Trends: the last '
            f'30 minutes; red dashes the alarm level, green the clear level; a red mark a '
            f'raise, a green one a clear (click it for the episode).</p>'
            f'<div class="cards">{body}</div>')
