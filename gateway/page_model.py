"""What the asset-first page shows, as plain data (the `/status` key `assets`).

One card per asset that has rules: its state, its open conditions, and the signals its rules
read, each with the levels to draw on its trend. The state is one word a person acts on, in
this order of precedence (the first that holds wins):

    raised       a condition is open (a request exists or is on its way)
    pending      a condition holds but its on-delay has not run out yet
    shelved      another component shelved the asset's rules (snapshot key `shelved`)
    muted        a `suppress_while` signal mutes a rule (machine in maintenance, say)
    bad quality  the last sample of a rule signal was BAD
    no data      a rule signal never sent a sample, or not within its stale limit
    normal

Shelved and muted win over bad quality and no data: someone decided to look away (a sensor
unplugged during maintenance is expected); the signal line on the card still says "no data".
Cards are sorted by what needs a person first: raised, pending, bad quality, no data, then
shelved, muted and normal (`STATES`).

Pure functions of the rule instances, the trend store and the rest of the snapshot, so the
page, the JSON and the tests agree. No I/O, no clock of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.messages import iso_time
from gateway.model import Quality
from gateway.trends import TrendStore
from rules.episode import RuleInstance
from rules.threshold import BandThreshold, CountThreshold, InsideThreshold
from rules.watch import StaleRule

STATES = ("raised", "pending", "bad quality", "no data", "shelved", "muted", "normal")
# A shelved asset says so first: its rules still judge, but what they raise is held back on
# purpose, and "raised" would suggest a request that was never sent.
PRECEDENCE = ("shelved", "raised", "pending", "muted", "bad quality", "no data", "normal")
# A rule signal without a stale rule of its own counts as "no data" after this long.
DEFAULT_NO_DATA_SECONDS = 600.0


def levels_of(inst: object) -> dict[str, list[float]]:
    """Alarm and clear levels of a value-threshold rule, finite ones only ({} for other kinds:
    a rate level is a change per window, not a value, and is not drawn on the value axis)."""
    if not isinstance(inst, BandThreshold | InsideThreshold | CountThreshold):
        return {}
    alarm = [v for v in (inst.lo, inst.hi) if math.isfinite(v)]
    clear = [v for v in (inst.clo, inst.chi) if math.isfinite(v)]
    return {"alarm": alarm, "clear": [v for v in clear if v not in alarm]}


def _shelved_assets(shelved: object) -> set[str]:
    """The assets named by another helper's `shelved` key: a list of {asset: ...} items or of
    asset names, or a mapping keyed by asset. Anything else names none."""
    out: set[str] = set()
    items: Iterable[Any] = (shelved.keys() if isinstance(shelved, Mapping)
                            else shelved if isinstance(shelved, list) else ())
    for item in items:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, Mapping) and isinstance(item.get("asset"), str):
            out.add(item["asset"])
    return out


WORK_ORDER_PREFIX = "WO:"  # a Maximo work-order receipt (gateway/upstream/maximo_work.py)
# `{kind}` in a record_url: Maximo's application for the record, so one template reaches both
RECORD_KINDS = {"work_order": "wotrack", "service_request": "sr"}


def record_link(templates: Mapping[str, str | None], sink: str, receipt: object) -> str | None:
    """The upstream's own page for a record, from its `record_url` template.

    `{receipt}` is the record's id. A Maximo work order's receipt is `WO:<wonum>` (an SR's a
    bare ticketid): the prefix is stripped, and `{kind}`, when the template has it, becomes
    `wotrack` for a work order and `sr` otherwise (Maximo's application names). A template
    without `{kind}` was written for one kind of record: a work order gets no link from it
    (it would open the service request of the same number), everything else does.
    """
    template = templates.get(sink)
    if not template or receipt in (None, ""):
        return None
    from urllib.parse import quote

    ident = str(receipt)
    work_order = ident.startswith(WORK_ORDER_PREFIX)
    if work_order:
        ident = ident[len(WORK_ORDER_PREFIX):].strip()
        if "{kind}" not in template or not ident:
            return None
    kind = RECORD_KINDS["work_order" if work_order else "service_request"]
    return template.replace("{receipt}", quote(ident, safe="")).replace("{kind}", kind)


def asset_cards(instances: Sequence[RuleInstance], trends: TrendStore | None,
                snapshot: Mapping[str, Any], now: float,
                *, line_of: Any = None, area_of: Any = None,
                record_urls: Mapping[str, str | None] | None = None,
                parts_of: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """Cards, those with a problem first (in the order of STATES), then by asset name.
    `parts_of`: per episode id, the one-line spare-parts summaries (gateway/page_workflow.py
    `card_summary`, one per upstream with a parts chain)."""
    parts = parts_of or {}
    templates = record_urls or {}
    shelved = _shelved_assets(snapshot.get("shelved"))
    episodes: dict[str, list[dict[str, Any]]] = {}
    for e in snapshot.get("open_episodes", ()):
        episodes.setdefault(e["asset"], []).append(e)
    status = {(r.get("sink"), r.get("episode_id")): r
              for r in (snapshot.get("upstream_status") or {}).get("records", ())}
    by_asset: dict[str, list[RuleInstance]] = {}
    stale_limit: dict[tuple[str, str], float] = {}
    for inst in instances:
        by_asset.setdefault(inst.asset, []).append(inst)
        if isinstance(inst, StaleRule):
            stale_limit[(inst.asset, inst.signal)] = inst.limit
    cards = []
    for asset, insts in by_asset.items():
        signals: dict[str, dict[str, Any]] = {}
        flags: set[str] = set()
        for inst in insts:
            if inst.active:
                flags.add("raised")
            elif inst.pending_since is not None:
                flags.add("pending")
            if inst.suppressed:
                flags.add("muted")
            for sig in inst.signals():
                entry = signals.setdefault(sig, {"signal": sig, "alarm": [], "clear": [],
                                                 "rules": [], "state": "normal"})
                entry["rules"].append(inst.rule_id)
                for k, vals in levels_of(inst).items():
                    entry[k] += [v for v in vals if v not in entry[k]]
        for sig, entry in signals.items():
            ring = trends.ring(asset, sig) if trends is not None else None
            limit = stale_limit.get((asset, sig), DEFAULT_NO_DATA_SECONDS)
            seen = None if ring is None else ring.seen_at
            if seen is None or now - seen > limit:
                entry["state"] = "no data"
            elif ring is not None and ring.last_quality is Quality.BAD:
                entry["state"] = "bad quality"
            entry["last_sample_at"] = None if seen is None else iso_time(seen)
            entry["value"] = None if ring is None else ring.last_value
            if entry["state"] != "normal":
                flags.add(entry["state"])
        if asset in shelved:
            flags.add("shelved")
        state = next(s for s in PRECEDENCE if s in flags or s == "normal")
        conditions = []
        for e in episodes.get(asset, ()):
            links = []
            for sink, receipt in (e.get("receipts") or {}).items():
                st = status.get((sink, e["episode_id"])) or {}
                links.append({"sink": sink, "receipt": receipt, "status": st.get("state"),
                              "url": record_link(templates, sink, receipt)})
            for sink, why in (e.get("undelivered") or {}).items():
                links.append({"sink": sink, "receipt": None, "status": why, "url": None})
            conditions.append({**{k: e.get(k) for k in ("rule_id", "episode_id", "severity",
                                                          "value", "reason", "raised_at",
                                                          "held_back")},
                               "upstreams": links,
                               "parts": list(parts.get(e["episode_id"], ()))})
        cards.append({"asset": asset, "state": state, "flags": sorted(flags),
                      "line": line_of(asset) if line_of else None,
                      "area": area_of(asset) if area_of else None,
                      "conditions": sorted(conditions, key=lambda c: c.get("severity") or 9),
                      "pending_since": min((iso_time(i.pending_since) for i in insts
                                            if i.pending_since is not None), default=None),
                      # when the first pending raise happens unless the value recovers
                      "raises_at": min((iso_time(i.pending_since + i.on_delay) for i in insts
                                        if i.pending_since is not None and not i.active),
                                       default=None),
                      "signals": list(signals.values())})
    cards.sort(key=lambda c: (STATES.index(c["state"]), c["asset"]))
    return cards
