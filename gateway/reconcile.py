"""`plantbridge reconcile`: does each upstream hold what this gateway decided?

For every episode raised in the window and every upstream its request went to, the upstream is
asked for the records carrying the episode's external reference (the deterministic `PB...`
dedup key) and the answer compared with the outbox (episodes, messages, receipts):

- missing upstream: the request was delivered (or dead-lettered) but no record carries the
  reference any more. `--fix` sends it again: a dead letter is requeued, a delivered one is
  enqueued again under its original idempotency key (its body rebuilt from the rule), and the
  forwarder creates it once (the adapters look the reference up before creating).
- unknown upstream: a record carries our reference but is not the one we know (a duplicate,
  or one entered by hand with our reference).
- closed upstream: our record is completed upstream while the condition is still open here.
- parts missing: the request was delivered and the registry lists spare parts for the asset
  and the rule's failure code, but no reservation was accepted (the chain's steps dead-lettered,
  or never started). Read from the outbox: each step looked its own reference up upstream
  before creating, so an accepted step is held upstream.

A request still pending locally is in flight, not a difference. Reads take no lock of the
daemon's; `--fix` is one short write transaction per re-sent request.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.messages import dedup_key, iso_time, messages_for
from gateway.model import MessageKind, OutboxMessage, RequestDetails, Transition, TransitionKind
from gateway.status_poll import StatusReader, UpstreamReadError, WorkState
from gateway.workflow import PARTS_LANE_SUFFIX

if TYPE_CHECKING:
    from buffer.operator import EpisodeRequest
    from buffer.store import OutboxStore
    from rules import RuleSet

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_window(text: str) -> float:
    """'7d', '12h', '30m', '90s', '2w' -> seconds. Raises ValueError in plain words."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"--since {text!r}: give a number and a unit s, m, h, d or w (7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


class Difference(enum.StrEnum):
    MISSING_UPSTREAM = "missing_upstream"
    UNKNOWN_UPSTREAM = "unknown_upstream"
    CLOSED_UPSTREAM = "closed_upstream"
    PARTS_MISSING = "parts_missing"


WORDS = {
    Difference.MISSING_UPSTREAM: "MISSING UPSTREAM",
    Difference.UNKNOWN_UPSTREAM: "NOT KNOWN HERE",
    Difference.CLOSED_UPSTREAM: "CLOSED UPSTREAM",
    Difference.PARTS_MISSING: "PARTS MISSING",
}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Difference
    sink: str
    asset: str
    rule_id: str
    episode_id: str
    external_ref: str
    raised_at: str
    local_receipt: str | None
    upstream_id: str | None
    upstream_status: str
    explanation: str
    fixed: str = ""  # what --fix did: requeued | re-enqueued | pending


@dataclass(slots=True)
class Report:
    since: str
    episodes: int = 0
    checked: int = 0  # (episode, upstream) pairs compared
    in_flight: int = 0  # still pending here: not a difference
    findings: list[Finding] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # upstream -> why it was not checked
    skipped: dict[str, str] = field(default_factory=dict)  # upstream -> why it cannot be

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since, "episodes": self.episodes, "checked": self.checked,
                "in_flight": self.in_flight,
                "findings": [asdict(f) | {"kind": str(f.kind)} for f in self.findings],
                "errors": dict(self.errors), "skipped": dict(self.skipped)}


Rebuild = Callable[["EpisodeRequest"], OutboxMessage]


async def reconcile(outbox: OutboxStore, readers: Mapping[str, StatusReader], since: float,
                    *, fix: bool = False, rebuild: Rebuild | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    failure_code_of: Callable[[str, str], str] | None = None) -> Report:
    """Compare the outbox since `since` with the upstreams in `readers` (by sink name).
    `failure_code_of(rule_id, asset)` enables the parts check (the rule's failure code)."""
    report = Report(iso_time(since))
    rows = await outbox.episodes_with_requests(since)
    report.episodes = len({r.episode_id for r in rows})
    for sink in sorted({r.sink for r in rows} - set(readers)):
        report.skipped[sink] = "this upstream cannot be read back (not configured, or no lookup)"
    for n, row in enumerate(rows, 1):
        if progress is not None:
            progress(n, len(rows))
        reader = readers.get(row.sink)
        if reader is None or row.sink in report.errors:
            continue
        ref = dedup_key(row.episode_id)
        try:
            found = await reader.records_by_reference(ref)
            if row.receipt and row.receipt not in {r.id for r in found}:
                # A record linked under `existing_work = "link"`/"skip" is someone else's and
                # carries no reference of ours: look for the receipt itself.
                linked = await reader.read_record(row.receipt)
                found = [*found, linked] if linked is not None else found
        except UpstreamReadError as exc:
            report.errors[row.sink] = str(exc)
            continue
        report.checked += 1
        for finding in _compare(row, ref, found):
            if fix and finding.kind is Difference.MISSING_UPSTREAM and rebuild is not None:
                finding = _with_fix(finding, await outbox.resend_request(rebuild(row)))
            report.findings.append(finding)
        if row.state == "pending" and not found:
            report.in_flight += 1
    if failure_code_of is not None:
        report.findings += await _parts_missing(outbox, readers, rows, failure_code_of)
    return report


async def _parts_missing(outbox: OutboxStore, readers: Mapping[str, StatusReader],
                         rows: Sequence[EpisodeRequest],
                         failure_code_of: Callable[[str, str], str]) -> list[Finding]:
    """Delivered requests whose asset needs spare parts and whose reservation was never
    accepted (the chain's lane is `<episode>#parts`, see gateway/workflow.py)."""
    wanted: list[tuple[EpisodeRequest, str]] = []
    for row in rows:
        parts_for = getattr(readers.get(row.sink), "parts_for", None)
        code = failure_code_of(row.rule_id, row.asset)
        if row.state == "delivered" and parts_for is not None and code \
                and parts_for(row.asset, code):
            wanted.append((row, code))
    steps = await outbox.episode_steps([r.episode_id + PARTS_LANE_SUFFIX for r, _ in wanted])
    out = []
    for row, code in wanted:
        done = steps.get(row.episode_id + PARTS_LANE_SUFFIX, [])
        kinds = {kind: state for kind, state in done}
        if kinds.get(MessageKind.PARTS_RESERVATION.value) == "delivered" or \
                "pending" in kinds.values():
            continue  # reserved, or a step still on its way
        dead = [k.removeprefix("parts_") for k, st in done if st == "dead"]
        why = (f"the {', '.join(dead)} step was dead-lettered (see plantbridge dead-letters)"
               if dead else "no parts step was started (parts added to the registry later?)")
        out.append(Finding(Difference.PARTS_MISSING, row.sink, row.asset, row.rule_id,
                           row.episode_id, dedup_key(row.episode_id), iso_time(row.raised_at),
                           row.receipt, row.receipt, "",
                           f"spare parts for failure code {code} were not reserved: {why}"))
    return out


def _with_fix(f: Finding, done: str) -> Finding:
    return replace(f, fixed=done)


def _compare(row: EpisodeRequest, ref: str, found: Sequence[Any]) -> list[Finding]:
    def finding(kind: Difference, upstream_id: str | None, status: str, words: str) -> Finding:
        return Finding(kind, row.sink, row.asset, row.rule_id, row.episode_id, ref,
                       iso_time(row.raised_at), row.receipt, upstream_id, status, words)

    out: list[Finding] = []
    ids = [r.id for r in found]
    ours = row.receipt if row.receipt in ids else (ids[0] if ids and not row.receipt else None)
    if not found and row.state != "pending":
        what = (f"request {row.receipt} was created" if row.receipt
                else "request was dead-lettered here and never created")
        out.append(finding(Difference.MISSING_UPSTREAM, None, "", (
            f"the {what}, but {row.sink} holds no record with reference {ref}")))
    elif row.receipt and row.receipt not in ids:
        out.append(finding(Difference.MISSING_UPSTREAM, None, "", (
            f"request {row.receipt} is no longer in {row.sink}; other record(s) carry {ref}")))
    for rec in found:
        if rec.id == ours:
            if rec.state is WorkState.COMPLETED and row.cleared_at is None:
                out.append(finding(Difference.CLOSED_UPSTREAM, rec.id, rec.raw, (
                    f"{rec.id} is {rec.raw or 'completed'} in {row.sink} while the condition "
                    "is still active here")))
            continue
        out.append(finding(Difference.UNKNOWN_UPSTREAM, rec.id, rec.raw, (
            f"{rec.id} in {row.sink} carries our reference {ref} but this gateway's request "
            f"is {row.receipt or 'not created yet'}: a duplicate, or entered by hand")))
    return out


def request_rebuilder(rules: RuleSet, site: str) -> Rebuild:
    """Rebuild a delivered request's message (its body is gone once delivered) from the
    episode and its rule as configured now; the key is the original one (it derives from the
    episode and the sink only)."""
    specs = {r.rule_id: r for r in rules.rules}

    def rebuild(row: EpisodeRequest) -> OutboxMessage:
        rule = specs.get(row.rule_id)
        spec = rule.per_asset.get(row.asset, rule.spec) if rule is not None else None
        names = {"asset": row.asset, "signal": getattr(spec, "signal", ""), "value": "n/a",
                 "rule_id": row.rule_id}
        request = RequestDetails(title=f"{row.rule_id} on {row.asset}", priority=row.severity)
        if spec is not None:
            request = RequestDetails(
                title=_fill(spec.title, names), priority=spec.priority or spec.severity,
                failure_code=spec.failure_code, breakdown=spec.breakdown,
                long_text=_fill(spec.long_text, names))
        t = Transition(TransitionKind.RAISED, row.rule_id, row.asset, str(names["signal"]),
                       row.episode_id, row.severity, None, row.raised_at,
                       "sent again by `plantbridge reconcile --fix`: the upstream no longer "
                       "held the request", request)
        return messages_for(t, [row.sink], site)[0]

    return rebuild


def failure_codes(rules: RuleSet) -> Callable[[str, str], str]:
    """(rule_id, asset) -> the failure code the rule gives that asset's requests ("" none)."""
    specs = {r.rule_id: r for r in rules.rules}

    def code(rule_id: str, asset: str) -> str:
        rule = specs.get(rule_id)
        return "" if rule is None else rule.per_asset.get(asset, rule.spec).failure_code

    return code


def _fill(template: str, names: Mapping[str, Any]) -> str:
    try:
        return template.format(**names)
    except (KeyError, IndexError, ValueError):
        return template


def format_text(report: Report) -> str:
    """The report as a maintenance planner reads it."""
    lines = [f"Reconciliation since {report.since}: {report.episodes} episode(s), "
             f"{report.checked} request(s) compared with the upstreams"
             + (f", {report.in_flight} still on their way" if report.in_flight else "")]
    for sink, why in sorted(report.errors.items()):
        lines.append(f"  {sink}: NOT CHECKED - {why}")
    for sink, why in sorted(report.skipped.items()):
        lines.append(f"  {sink}: skipped - {why}")
    if not report.findings:
        lines.append("No differences: every upstream holds what this gateway decided.")
    else:
        lines.append(f"{len(report.findings)} difference(s):")
    for f in report.findings:
        lines.append(f"  {WORDS[f.kind]:<17} {f.asset}  rule {f.rule_id}  raised {f.raised_at}"
                     f"  upstream {f.sink}")
        lines.append(f"      {f.explanation}")
        if f.fixed:
            lines.append(f"      fix: {f.fixed} (it will be delivered by the running gateway)")
    return "\n".join(lines)


async def run_reconcile(loaded: Any, window_seconds: float, *, fix: bool, now: float,
                        progress: Callable[[int, int], None] | None = None) -> Report:
    """What `plantbridge reconcile` runs: open the outbox beside the daemon (no lock), build
    each upstream that can be read back, compare, close everything."""
    cfg = loaded.config
    readers: dict[str, StatusReader] = {}
    built = []
    try:
        for up in cfg.upstreams:
            sink = up.build()
            built.append(sink)
            if isinstance(sink, StatusReader):
                readers[up.name] = sink
        async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
            return await reconcile(store, readers, now - window_seconds, fix=fix,
                                   rebuild=request_rebuilder(loaded.rules, cfg.gateway.site),
                                   progress=progress,
                                   failure_code_of=failure_codes(loaded.rules))
    finally:
        for sink in built:
            await sink.aclose()
