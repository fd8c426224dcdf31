"""The alarm-management part of the status page (issue 12): open incidents of a flood, shelves,
the rules that raise most (ISA-18.2 "bad actors") and chattering rules, so a technician sees
which rule to fix. Reads the `alarms` key of /status (gateway/flood.py `AlarmComponents`)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def page_keys(alarms: Mapping[str, Any]) -> dict[str, Any]:
    """The keys the asset cards read: `shelved` (assets shelved, or with a shelved rule's
    episode held back) and `flood` (a banner while any line floods)."""
    shelving = alarms.get("shelving") or {}
    shelved = sorted({s["target"] for s in shelving.get("shelves", []) if s["kind"] == "asset"}
                     | {e["asset"] for e in shelving.get("hidden_episodes", [])})
    incidents = (alarms.get("rollup") or {}).get("incidents", [])
    flood = None
    if incidents:
        flood = {"active": True, "message": "; ".join(
            f"{i['line']}: {i['episodes']} conditions rolled up into one incident request "
            f"({i['title']}, since {i['started_at']})" for i in incidents)}
    return {"shelved": shelved, "flood": flood}


def section(alarms: Mapping[str, Any] | None) -> str:
    """One table: what is shelved, what floods, which rules to look at. Empty: nothing to say."""
    if not alarms:
        return ""
    e = html.escape
    rows: list[str] = []
    for i in (alarms.get("rollup") or {}).get("incidents", []):
        rows.append(f"<tr class='bad'><td>incident</td><td>{e(i['line'])}</td><td>"
                    f"{e(i['title'])}: {i['episodes']} conditions, {i['open_episodes']} open, "
                    f"since {e(i['started_at'])}</td></tr>")
    for s in (alarms.get("shelving") or {}).get("shelves", []):
        rows.append(f"<tr class='open'><td>shelved</td><td>{e(s['kind'])} {e(s['target'])}"
                    f"</td><td>until {e(s['until'])}: {e(s['reason'])}</td></tr>")
    flood = alarms.get("flood") or {}
    for line, f in sorted((flood.get("lines") or {}).items()):
        rows.append(f"<tr class='{'bad' if f['flood'] else 'ok'}'><td>raises per 10 min</td>"
                    f"<td>{e(line)}</td><td>{f['raises_10min']}"
                    f"{' (flood)' if f['flood'] else ''}</td></tr>")
    for b in flood.get("bad_actors") or []:
        rows.append(f"<tr><td>most raises in 24 h</td><td>{e(b['rule_id'])}</td>"
                    f"<td>{b['raises_24h']}</td></tr>")
    for c in flood.get("chattering") or []:
        rows.append(f"<tr class='bad'><td>chattering</td><td>{e(c['rule_id'])} on "
                    f"{e(c['asset'])}</td><td>{c['transitions_1h']} raises and clears in an "
                    "hour: widen its hysteresis or add a delay</td></tr>")
    if not rows:
        return ""
    return ("<h2>Alarm management</h2><table><tr><th>what</th><th>which</th><th>detail</th>"
            "</tr>" + "".join(rows) + "</table>")
