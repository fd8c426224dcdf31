"""One episode's workflow as a maintenance planner reads it, per upstream, from the outbox.

    request -> stock -> reservation -> requisition -> upstream state -> clear

Each step is read from what the outbox holds (the episode's records, their attempts and
receipts, the spare-parts records of lane `<episode>#parts` and the `upstream_status` rows the
status poller stored), never from the daemon's memory: the page and `plantbridge trace` tell
the same story after a restart, and `trace` tells it without a daemon.

A step's state is one word a planner acts on:

    waiting        not enqueued yet (its previous step is not accepted), or queued, not sent
    sent           tried, and the answer settled nothing (a retry that gave no reason); a
                   send in flight right now shows as waiting: the outbox's read API does not
                   expose its send mark
    accepted       the upstream took it; its id (receipt) is shown
    failing        being retried: the last error and the number of attempts
    dead-lettered  refused for good: the error, and the `plantbridge dead-letters` hint
    not needed     the step will not happen (stock at or above the reorder level; no parts
                   listed for the asset and failure code)

plus, for the upstream-state step, the state last read back (created, in_progress,
completed, missing). Input: the plain data of `gateway.trace.as_dict` (its `messages` and
`upstream_status`), so the functions here are pure and testable without a store.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.workflow import parse_stock_receipt

STEP_NAMES = ("request", "stock", "reservation", "requisition", "upstream", "clear")
PART_KINDS = {"parts_stock": "stock", "parts_reservation": "reservation",
              "parts_requisition": "requisition"}
DEAD = "dead-lettered"
# What a person does about a dead step (gateway/dead_letters.py prints the same advice).
DEAD_HINT = "fix the cause, then: plantbridge dead-letters --requeue {record_id}"

NOT_POLLED = "not read back yet (polled every status_poll_seconds, by upstreams that poll)"
LinkOf = Callable[[str, object], "str | None"]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of one upstream's workflow for one episode."""

    name: str  # one of STEP_NAMES, or "parts" when no parts are listed
    state: str  # see the module docstring
    detail: str  # plain words: the levels seen, the ids, why it waits
    receipt: str | None = None
    attempts: int = 0
    error: str | None = None
    record_id: int | None = None
    history: list[dict[str, str | None]] = field(default_factory=list)  # upstream step only


@dataclass(frozen=True, slots=True)
class Workflow:
    sink: str
    steps: list[Step]

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _attempts(m: Mapping[str, Any]) -> int:
    """How often the record was sent: the outbox counts every settle but an acceptance (so a
    delivered record was tried once more than it counts); the kept attempt history, which
    thins long retry runs out and restarts numbering after a requeue, only when the record
    itself is gone."""
    count, state = m.get("attempt_count"), m.get("state")
    if count is not None and state in ("pending", "dead", "delivered"):
        return int(count) + int(state == "delivered")
    return max([len(m.get("attempts") or ()),
                *(int(a.get("number") or 0) for a in m.get("attempts") or ())])


def _delivery(name: str, m: Mapping[str, Any], accepted: str) -> Step:
    """The step of an outbox record, by its state; `accepted` is the detail once accepted."""
    n = _attempts(m)
    rid = m.get("record_id")
    receipt = m.get("receipt")
    error = m.get("last_error") or next(
        (a["error"] for a in reversed(m.get("attempts") or ()) if a.get("error")), None)
    state = str(m.get("state"))
    if state == "delivered":
        return Step(name, "accepted", accepted, receipt, n, None, rid)
    if state == "dead":
        hint = DEAD_HINT.format(record_id=rid if rid is not None else "ID")
        return Step(name, DEAD, f"refused: {error or 'no reason kept'}; {hint}", receipt, n,
                    error, rid)
    if state == "pending":
        if not m.get("attempt_count"):  # never tried, or requeued (`dead-letters --requeue`)
            was = (f" (requeued; it was refused: {m['last_error']})" if m.get("last_error")
                   else "")
            return Step(name, "waiting", "queued, not sent yet" + was, None, 0, None, rid)
        if m.get("last_error"):
            return Step(name, "failing", f"failing after {n} attempt{'s' * (n != 1)}: "
                        f"{m['last_error']}", None, n, str(m["last_error"]), rid)
        return Step(name, "sent", "sent, waiting for the answer", None, n, None, rid)
    return Step(name, state, "the record is gone from the outbox (dropped or pruned)",
                receipt, n, error, rid)


def _levels(receipt: str | None) -> str:
    stock = parse_stock_receipt(receipt)
    if stock is None:
        return f"levels seen: {receipt}" if receipt else "levels seen: none"
    return "levels seen: " + ", ".join(f"{place} {qty:g}" for place, qty in stock.items())


def items_reserved(wf: Workflow) -> int | None:
    """How many part lines the reservation covers: one per part place of the stock read."""
    stock = wf.step("stock")
    levels = parse_stock_receipt(stock.receipt if stock else None)
    return None if levels is None else len(levels)


def _waiting(name: str, after: str) -> Step:
    return Step(name, "waiting", f"after the {after} is accepted")


def _parts_steps(by_kind: Mapping[str, Mapping[str, Any]], request: Step) -> list[Step]:
    stock_m = by_kind.get("parts_stock")
    if stock_m is None:
        if request.state == "accepted":  # the chain is enqueued with the settle, or never
            return [Step("parts", "not needed",
                         "no spare parts listed for this asset and failure code")]
        return [_waiting("stock", "request"), _waiting("reservation", "stock check"),
                _waiting("requisition", "reservation")]
    stock = _delivery("stock", stock_m, _levels(stock_m.get("receipt")))
    out = [stock]
    res_m = by_kind.get("parts_reservation")
    if res_m is None:
        out.append(_waiting("reservation", "stock check"))
        out.append(_waiting("requisition", "reservation"))
        return out
    reservation = _delivery("reservation", res_m, f"reservation {res_m.get('receipt')}")
    out.append(reservation)
    req_m = by_kind.get("parts_requisition")
    if req_m is not None:
        out.append(_delivery("requisition", req_m, f"requisition {req_m.get('receipt')}"))
    elif reservation.state == "accepted":
        out.append(Step("requisition", "not needed", "stock at or above reorder level"))
    else:
        out.append(_waiting("requisition", "reservation"))
    return out


def _upstream_step(rows: Sequence[Mapping[str, Any]], request: Step) -> Step:
    if not rows:
        why = (NOT_POLLED if request.state == "accepted" else "after the request is accepted")
        return Step("upstream", "waiting", why)
    history = [{"state": str(r["state"]), "raw": r.get("raw") or None, "at": r.get("seen_at")}
               for r in rows]
    said = " \u2192 ".join(  # created -> in progress -> completed, each with its time
        f"{str(h['state']).replace('_', ' ')} {h['at'] or '?'}"
        + (f" ({h['raw']})" if h["raw"] else "") for h in history)
    return Step("upstream", str(rows[-1]["state"]), said, str(rows[-1].get("receipt") or ""),
                history=history)


def _clear_step(m: Mapping[str, Any] | None, cleared_at: str | None) -> Step:
    if m is None:
        if cleared_at is None:
            return Step("clear", "waiting", "the condition is still active")
        return Step("clear", "waiting", f"cleared {cleared_at}, no clear enqueued for it")
    return _delivery("clear", m, f"cleared {cleared_at or '?'}, the upstream took the clear")


def workflows(messages: Sequence[Mapping[str, Any]],
              upstream_status: Sequence[Mapping[str, Any]] = (),
              cleared_at: str | None = None) -> list[Workflow]:
    """Per upstream that has a maintenance request in this episode: its workflow, in step
    order. `messages` and `upstream_status` as `gateway.trace.as_dict` returns them."""
    per_sink: dict[str, dict[str, Mapping[str, Any]]] = {}
    for m in messages:
        # the first record of each kind per sink: the chain makes one of each
        per_sink.setdefault(str(m.get("sink")), {}).setdefault(str(m.get("kind")), m)
    out = []
    for sink, by_kind in per_sink.items():
        req_m = by_kind.get("maintenance_request")
        if req_m is None:
            continue
        request = _delivery("request", req_m, f"upstream id {req_m.get('receipt')}")
        rows = [r for r in upstream_status if r.get("sink") == sink]
        steps = [request, *_parts_steps(by_kind, request), _upstream_step(rows, request),
                 _clear_step(by_kind.get("status_update"), cleared_at)]
        out.append(Workflow(sink, steps))
    return out


def card_summary(wf: Workflow) -> str | None:
    """The card's one line about the spare parts ("parts: reserved 2 items, requisition
    1001"); None when the episode has no parts chain (yet)."""
    if wf.step("parts") is not None:
        return None
    stock, res, req = wf.step("stock"), wf.step("reservation"), wf.step("requisition")
    if stock is None or res is None or req is None or (stock.state == "waiting"
                                                       and stock.record_id is None):
        return None  # the chain has not started (the request is not accepted yet)
    for s in (stock, res, req):
        if s.state == DEAD:
            return f"parts: {s.name} REFUSED (dead letter)"
        if s.state == "failing":
            return f"parts: {s.name} failing ({s.attempts} attempt{'s' * (s.attempts != 1)})"
    if res.state != "accepted":
        return "parts: reserving" if stock.state == "accepted" else "parts: checking stock"
    n = items_reserved(wf)
    said = (f"parts: reserved {n} item{'s' * (n != 1)}" if n is not None
            else f"parts: reservation {res.receipt}")
    if req.state == "accepted":
        return f"{said}, requisition {req.receipt}"
    if req.state == "not needed":
        return f"{said}, no requisition needed"
    return f"{said}, requisition on its way"


# --- HTML for the episode page -----------------------------------------------------------

CSS = """
table.workflow{border-collapse:collapse;margin:.3em 0 1em;width:100%}
table.workflow td,table.workflow th{border-bottom:1px solid #ddd;padding:.25em .5em;
 text-align:left;vertical-align:top}
.step .st{font-weight:bold;white-space:nowrap}
.step.accepted .st{color:#1b5e20} .step.failing .st{color:#ef6c00}
.step.dead-lettered .st{color:#fff;background:#c62828;padding:0 .3em}
.step.waiting .st,.step.sent .st{color:#555} .step.not-needed .st{color:#555}
.step.completed .st{color:#1b5e20} .step.in_progress .st{color:#0d47a1}
"""


def render_html(flows: Sequence[Workflow], link_of: LinkOf | None = None) -> str:
    """One table per upstream; each row a step, its state as a word and a class."""
    e = html.escape
    if not flows:
        return "<p>No maintenance request in this episode.</p>"
    parts = []
    for wf in flows:
        rows = []
        for s in wf.steps:
            detail = e(s.detail)
            url = link_of(wf.sink, s.receipt) if link_of and s.name in ("request", "upstream") \
                and s.receipt else None
            if url and s.receipt:
                link = f'<a class="record" href="{e(url)}">{e(s.receipt)}</a>'
                detail = detail.replace(e(s.receipt), link, 1) if e(s.receipt) in detail \
                    else f"{detail} ({link})"
            cls = s.state.replace(" ", "-")
            rows.append(f'<tr class="step {e(cls)}" data-step="{e(s.name)}" '
                        f'data-state="{e(s.state)}"><th>{e(s.name)}</th>'
                        f'<td class="st">{e(s.state)}</td><td>{detail}</td></tr>')
        parts.append(f'<h3>{e(wf.sink)}</h3><table class="workflow" data-sink="{e(wf.sink)}">'
                     f'{"".join(rows)}</table>')
    return "".join(parts)


def format_text(flows: Sequence[Workflow]) -> list[str]:
    """The workflow lines of `plantbridge trace`: one per step."""
    lines = []
    for wf in flows:
        lines.append(f"workflow at {wf.sink}:")
        for s in wf.steps:
            tries = (f" ({s.attempts} attempt{'s' * (s.attempts != 1)})"
                     if s.attempts and s.state != "failing" else "")  # failing says it
            lines.append(f"    {s.name:<12} {s.state:<14} {s.detail}{tries}".rstrip())
    return lines
