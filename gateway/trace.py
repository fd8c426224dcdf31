"""`plantbridge trace ID`: one event's whole life, read from the outbox.

ID is an episode id, an idempotency key (`request:PB...:cmms`), the external reference every
key of the episode shares (`PB...`), or the upstream's id (`WR-1`, `MR-000001`). The answer: the
episode (rule, asset, raised and cleared at, the value and reason that raised it), then every
message of it per sink with every delivery attempt (time, outcome, HTTP status, latency,
error) and the receipt, then per upstream the workflow as a planner reads it: request, stock,
reservation, requisition, the state read back upstream and the clear, each with its state
(gateway/page_workflow.py). Read-only and lock-free, so it runs beside the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from buffer.attempts import (
    KEEP_EVERY_ATTEMPT,
    KEEP_FIRST_ATTEMPTS,
    Attempt,
    StoredRecord,
    Trace,
)
from buffer.operator import UpstreamStatusRow
from gateway.config import PlantBridgeConfig
from gateway.messages import iso_time
from gateway.page_workflow import format_text as workflow_text
from gateway.page_workflow import workflows
from gateway.story import message_facts


async def load(cfg: PlantBridgeConfig, ident: str) -> Trace | None:
    """The trace of what `ident` names in this gateway's outbox, or None."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        return await store.trace(ident)


async def upstream_history(cfg: PlantBridgeConfig, episode_id: str) -> list[UpstreamStatusRow]:
    """What the upstreams said of the episode's records, as polled (gateway/status_poll)."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        return await store.upstream_status(episode_id=episode_id)


def _time(ts: float | None) -> str | None:
    return None if ts is None else iso_time(ts)


def _attempt(a: Attempt) -> dict[str, Any]:
    return {"number": a.number, "started_at": _time(a.started_at),
            "finished_at": _time(a.finished_at),
            "outcome": a.outcome, "http_status": a.http_status, "latency_ms": a.latency_ms,
            "error": a.error or None, "receipt": a.receipt}


def _message(rec: StoredRecord | None, attempts: list[Attempt],
             facts: Mapping[str, Any]) -> dict[str, Any]:
    first = attempts[0] if attempts else None
    return {
        "record_id": rec.id if rec else (first.record_id if first else None),
        "key": rec.key if rec else (first.key if first else None),
        "sink": rec.sink if rec else (first.sink if first else None),
        "kind": rec.kind if rec else facts.get("kind"),
        "state": rec.state if rec else "gone (dropped or pruned)",
        "created_at": _time(rec.created_at) if rec else None,
        "settled_at": _time(rec.settled_at) if rec else None,
        "last_error": (rec.last_error or None) if rec else None,
        "attempt_count": rec.attempts if rec else len(attempts),
        # its own last receipt first: records of a side lane (parts steps) each have theirs
        "receipt": next((a.receipt for a in reversed(attempts) if a.receipt), None)
        or (rec.receipt if rec else None),
        "facts": dict(facts),
        "attempts": [_attempt(a) for a in attempts],
    }


def as_dict(trace: Trace, upstream: Sequence[UpstreamStatusRow] = ()) -> dict[str, Any]:
    """The trace as plain JSON-able data (what `--json` prints)."""
    by_record: dict[int, list[Attempt]] = {}
    for a in trace.attempts:
        by_record.setdefault(a.record_id, []).append(a)
    known = {r.id: r for r in trace.records}
    messages = []
    for rid in sorted(set(known) | set(by_record)):
        rec = known.get(rid)
        body = rec.body if rec is not None and rec.body is not None else None
        facts = trace.facts.get(rid) or _facts_of(body)
        messages.append(_message(rec, by_record.get(rid, []), facts))
    ep = trace.episode
    raise_facts = _facts_of_kind(messages, "maintenance_request")
    clear_facts = _facts_of_kind(messages, "status_update")
    episode = {
        "episode_id": trace.episode_id,
        "rule_id": ep.rule_id if ep else raise_facts.get("rule_id"),
        "asset": ep.asset if ep else next((r.asset for r in trace.records), None),
        "severity": ep.severity if ep else raise_facts.get("severity"),
        "raised_at": _time(ep.raised_at) if ep else raise_facts.get("raised_at"),
        "cleared_at": _time(ep.cleared_at) if ep else clear_facts.get("cleared_at"),
        "signal": raise_facts.get("signal"),
        "value": raise_facts.get("value"),
        "reason": raise_facts.get("reason"),
        "title": raise_facts.get("title"),
        "clear_value": clear_facts.get("value"),
        "clear_reason": clear_facts.get("reason"),
    }
    polled = [{"sink": r.sink, "receipt": r.receipt, "state": r.state, "raw": r.raw,
               "seen_at": _time(r.seen_at)} for r in upstream]
    # request -> parts steps -> upstream state -> clear, per upstream (gateway/page_workflow)
    cleared_at = episode["cleared_at"]
    flows = workflows(messages, polled, None if cleared_at is None else str(cleared_at))
    return {"episode": episode, "messages": messages, "upstream_status": polled,
            "workflow": [f.as_dict() for f in flows]}


def _facts_of_kind(messages: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The facts of the first message of this kind (the same for every sink)."""
    return next((dict(m["facts"]) for m in messages if m["kind"] == kind), {})


def _facts_of(body: Mapping[str, Any] | None) -> dict[str, Any]:
    return {} if body is None else message_facts(body)


def format_text(trace: Trace, upstream: Sequence[UpstreamStatusRow] = ()) -> str:
    """The trace for a person at a terminal."""
    d = as_dict(trace, upstream)
    ep = d["episode"]
    lines = [f"episode {ep['episode_id']}",
             f"  rule {ep['rule_id']} on asset {ep['asset']}, severity {ep['severity']}"]
    if ep["title"]:
        lines.append(f"  title: {ep['title']}")
    value = "" if ep["value"] is None else f" {ep['signal']} = {ep['value']:g}:"
    lines.append(f"  raised  {ep['raised_at'] or '?'}{value} {ep['reason'] or ''}".rstrip())
    if ep["cleared_at"]:
        said = "" if ep["clear_reason"] is None else f" {ep['clear_reason']}"
        lines.append(f"  cleared {ep['cleared_at']}{said}")
    else:
        lines.append("  still open (not cleared)")
    if not d["messages"]:
        lines.append("  no messages in the outbox (pruned, or no upstream configured)")
    for m in d["messages"]:
        receipt = f", upstream id {m['receipt']}" if m["receipt"] else ""
        lines.append(f"{m['sink']}: {m['kind']} record {m['record_id']} {m['key']}: "
                     f"{m['state']}{receipt}")
        if m["state"] == "dead" and m["last_error"]:
            lines.append(f"    dead letter: {m['last_error']}")
        if not m["attempts"]:
            lines.append("    no delivery attempt yet")
        elif m["attempts"][-1]["number"] > len(m["attempts"]):
            lines.append(f"    (after attempt {KEEP_FIRST_ATTEMPTS}, every "
                         f"{KEEP_EVERY_ATTEMPT}th retry is kept)")
        for a in m["attempts"]:
            status = f"HTTP {a['http_status']}" if a["http_status"] else ""
            latency = "" if a["latency_ms"] is None else f"{a['latency_ms']:.0f} ms"
            detail = a["error"] or (f"-> {a['receipt']}" if a["receipt"] else "")
            if status and detail.startswith(status):  # said once, in its column
                detail = detail[len(status):].lstrip(": ")
            lines.append(f"    #{a['number']:<3} {a['finished_at']}  {a['outcome']:<8} {status:<8} "
                         f"{latency:>8}  {detail}".rstrip())
    for u in d["upstream_status"]:  # created -> in progress -> completed, as polled
        said = f" ({u['raw']})" if u["raw"] else ""
        lines.append(f"{u['sink']}: {u['receipt']} {u['state']}{said} seen {u['seen_at']}")
    lines += workflow_text(workflows(d["messages"], d["upstream_status"], ep["cleared_at"]))
    return "\n".join(lines)
