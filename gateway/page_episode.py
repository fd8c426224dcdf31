"""`/episode/<id>`: one condition episode on one page.

The trend of its signal around the raise and the clear (from the page's trend ring, so only
while the episode is recent: the ring holds 30 minutes), the rule as written (its file and
line, and the text of its `[[rule]]` table), the workflow per upstream (request, spare-parts
steps, the state read back upstream, clear: gateway/page_workflow.py), the request's delivery
history per upstream (what `plantbridge trace` prints, from the running daemon's outbox) and
the links into the upstreams' own pages.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from buffer.attempts import Trace
from buffer.operator import UpstreamStatusRow
from gateway import trace as trace_mod
from gateway.page import chart_of
from gateway.page_model import levels_of, record_link
from gateway.page_workflow import CSS as WORKFLOW_CSS
from gateway.page_workflow import render_html, workflows
from gateway.trends import TrendStore
from rules.build import RuleDef
from rules.episode import RuleInstance

BEFORE_SECONDS = 600.0  # trend shown before the raise
AFTER_SECONDS = 300.0  # and after the clear (or up to now while open)


class TraceSource(Protocol):
    async def trace(self, ident: str) -> Trace | None: ...

    async def upstream_status(self, *,
                              episode_id: str | None = None) -> list[UpstreamStatusRow]: ...


def rule_location(defs: Iterable[RuleDef], rule_id: str) -> tuple[str, int | None, str]:
    """(file, line, text of its [[rule]] table) of a rule; line None when the file does not
    say (then the text is empty). The loader's line when it kept one, else the file is
    scanned for `id = "<rule_id>"` and the table that holds it."""
    d = next((d for d in defs if d.rule_id == rule_id), None)
    if d is None:
        return "", None, ""
    try:
        lines = Path(d.file).read_text(encoding="utf-8").splitlines()
    except OSError:
        return d.file, d.line, ""
    start = (d.line - 1) if d.line else None
    if start is None:
        pat = re.compile(r'^\s*id\s*=\s*["\']' + re.escape(rule_id) + r'["\']')
        hit = next((i for i, ln in enumerate(lines) if pat.match(ln)), None)
        if hit is None:
            return d.file, None, ""
        start = next((i for i in range(hit, -1, -1) if lines[i].strip().startswith("[[")), hit)
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].strip().startswith("[[")), len(lines))
    return d.file, start + 1, "\n".join(lines[start:end]).rstrip()


def _ts(iso: str | None) -> float | None:
    if not iso:
        return None
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def render_episode(ident: str, *, outbox: TraceSource | None, trends: TrendStore | None,
                         defs: Sequence[RuleDef], instances: Sequence[RuleInstance],
                         record_urls: Mapping[str, str | None], now: float | None = None
                         ) -> str | None:
    """The page, or None when the outbox knows no such episode."""
    if outbox is None:
        return None
    found = await outbox.trace(ident)
    if found is None:
        return None
    upstream = await outbox.upstream_status(episode_id=found.episode_id)
    d = trace_mod.as_dict(found, upstream)
    ep: dict[str, Any] = d["episode"]
    e = html.escape
    now = time.time() if now is None else now
    raised, cleared = _ts(ep.get("raised_at")), _ts(ep.get("cleared_at"))
    asset, rule_id = str(ep.get("asset") or ""), str(ep.get("rule_id") or "")
    insts = [i for i in instances if i.rule_id == rule_id and i.asset == asset]
    signal = ep.get("signal") or (insts[0].signal if insts else None)
    chart = "<p>No trend: the rule's signal is not known.</p>"
    if trends is not None and signal and raised is not None:
        since = raised - BEFORE_SECONDS
        until = min(now, (cleared or now) + AFTER_SECONDS)
        series = trends.series(asset, str(signal), since, until)
        levels = levels_of(insts[0]) if insts else {}
        chart = chart_of(series, levels.get("alarm", []), levels.get("clear", []), width=760,
                         height=180)
        if not series.buckets:
            chart += ("<p>The trend ring keeps the last 30 minutes: this episode is older, "
                      "or its signal sent nothing since.</p>")
    file, line, text = rule_location(defs, rule_id)
    where = f"{file}:{line}" if line else (file or "not in the running rule set")
    links = []
    for m in d["messages"]:
        if m["kind"] != "maintenance_request":  # the parts steps' ids are in the workflow
            continue
        url = record_link(record_urls, str(m["sink"]), m["receipt"])
        if m["receipt"]:
            ident_html = (f'<a class="record" href="{e(url)}">{e(str(m["receipt"]))}</a>'
                          if url else e(str(m["receipt"])))
            links.append(f"<li>{e(str(m['sink']))}: {ident_html}</li>")
    head = (f"rule <b>{e(rule_id)}</b> on <b>{e(asset)}</b>, severity {e(str(ep['severity']))}"
            f"<br>raised {e(str(ep['raised_at']))}: {e(str(ep.get('reason') or ''))}<br>"
            + (f"cleared {e(str(ep['cleared_at']))}: {e(str(ep.get('clear_reason') or ''))}"
               if cleared is not None else "<b>still open</b>"))
    history = trace_mod.format_text(found, upstream)
    flows = workflows(d["messages"], d["upstream_status"], ep.get("cleared_at"))
    steps = render_html(flows, lambda sink, receipt: record_link(record_urls, sink, receipt))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Episode {e(found.episode_id)}</title>
<style>body{{font-family:sans-serif;margin:1.2em;font-size:15px;max-width:60em}}
pre{{background:#f6f6f6;border:1px solid #ddd;padding:.5em;overflow-x:auto;font-size:13px}}
svg.trend{{width:100%;height:auto}} h2{{font-size:1.1em;margin:1em 0 .3em}}
h3{{font-size:1em;margin:.6em 0 .2em}}{WORKFLOW_CSS}</style></head>
<body><p><a href="/">&larr; all assets</a></p>
<h1>Episode {e(found.episode_id)}</h1><p>{head}</p>
<h2>Trend of {e(str(signal or '?'))} around the raise and the clear</h2>{chart}
<h2>Upstream records</h2><ul>{"".join(links) or "<li>none accepted yet</li>"}</ul>
<h2>Workflow: request, spare parts, state upstream, clear</h2>
<div class="workflows">{steps}</div>
<h2>The rule as written: <code>{e(where)}</code></h2><pre class="rule">{e(text) or "-"}</pre>
<h2>Delivery history (as <code>plantbridge trace</code> prints it)</h2>
<pre class="trace">{e(history)}</pre></body></html>"""
