"""What the Maximo sink puts on the wire and reads back: SR bodies, oslc.where, error JSON,
and how an answer becomes a Delivery.

Pure functions, no I/O: the canonical message body (gateway.messages) in, Maximo lean JSON out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson

from gateway.model import Delivery, Outcome
from gateway.upstream.maximo_http import Answer
from gateway.upstream.rest import problem_text, transport_reason
from gateway.upstream.retry_policy import classify_status

DESCRIPTION_MAX = 100  # TICKET.DESCRIPTION
EXTERNALRECID_MAX = 20  # TICKET.EXTERNALRECID
WORKLOG_DESCRIPTION_MAX = 100  # WORKLOG.DESCRIPTION
MAX_REASON = 400


class NotRenderable(ValueError):
    """The message cannot become a Maximo request: a permanent rejection, with the reason."""


def where_literal(value: str, what: str) -> str:
    """A quoted oslc.where string. Maximo has no escape for '"' inside one: refuse it."""
    if '"' in value or not value:
        raise NotRenderable(f"{what} {value!r} cannot be used in an oslc.where clause")
    return f'"{value}"'


def dedup_key_of(body: Mapping[str, Any]) -> str:
    key = body.get("dedup_key")
    if not isinstance(key, str) or not key:
        raise NotRenderable("the message has no dedup_key")
    if len(key) > EXTERNALRECID_MAX:
        raise NotRenderable(f"dedup_key {key!r} is longer than {EXTERNALRECID_MAX} characters "
                            "(TICKET.EXTERNALRECID)")
    where_literal(key, "dedup_key")
    return key


def long_description(body: Mapping[str, Any]) -> str:
    """The evidence: why, which rule, the reading, then the rule file's long text."""
    value = body.get("value")
    reading = "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    lines = [
        str(body.get("reason", "")),
        f"Rule: {body.get('rule_id', '')}",
        f"Signal: {body.get('signal', '')} = {reading}",
        f"Raised at: {body.get('raised_at', '')}",
        f"Episode: {body.get('episode_id', '')}",
        f"Gateway reference: {body.get('dedup_key', '')}",
    ]
    if body.get("failure_code"):
        lines.append(f"Failure code: {body['failure_code']}")
    if body.get("breakdown"):
        lines.append("Breakdown: the asset is down")
    text = str(body.get("long_text") or "").strip()
    if text:
        lines += ["", text]
    return "\n".join(lines)


def sr_body(body: Mapping[str, Any], *, assetnum: str, siteid: str, location: str | None,
            orgid: str | None, reportedby: str, reportedpriority: int,
            external_system: str) -> dict[str, Any]:
    """The `POST /os/mxapisr` body (lean JSON) for a canonical raise."""
    title = str(body.get("title") or f"{body.get('rule_id', '')} on {body.get('asset', '')}")
    out: dict[str, Any] = {
        "description": title[:DESCRIPTION_MAX],
        "description_longdescription": long_description(body),
        "assetnum": assetnum,
        "siteid": siteid,
        "reportedpriority": reportedpriority,
        "externalrecid": dedup_key_of(body),
    }
    if location:
        out["location"] = location
    if orgid:
        out["orgid"] = orgid
    if reportedby:
        out["reportedby"] = reportedby
    if external_system:
        out["externalsystem"] = external_system
    return out


def worklog_entry(body: Mapping[str, Any]) -> dict[str, Any]:
    """A work log note saying the condition cleared; its description carries the dedup key so a
    retried clear can see that the note is already there."""
    return {
        "description": worklog_marker(body)[:WORKLOG_DESCRIPTION_MAX],
        "description_longdescription": "\n".join([
            str(body.get("reason", "")),
            str(body.get("note", "")),
        ]) if body.get("update") else "\n".join([
            str(body.get("reason", "")),
            f"Rule: {body.get('rule_id', '')}",
            f"Cleared at: {body.get('cleared_at', '')}",
            f"Episode: {body.get('episode_id', '')}",
        ]),
    }


def worklog_marker(body: Mapping[str, Any]) -> str:
    if body.get("closed_upstream"):  # our record was completed while the condition is active
        return (f"Completed while condition active ({body.get('dedup_key', '')} "
                f"{body.get('updated_at', '')})")
    if body.get("update"):  # an incident update (roll-up): one note per update, never a clear
        return f"Incident update ({body.get('dedup_key', '')} {body.get('updated_at', '')})"
    return f"Condition cleared ({body.get('dedup_key', '')})"


def maximo_error(answer: bytes, content_type: str) -> str:
    """`BMXAA4021E - Value 9 is not valid ...` from Maximo's `{"Error": {...}}` (statusCode is
    a string there); another JSON error or a text snippet otherwise."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        doc = None
    err = doc.get("Error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        said = _said(err)
        more = err.get("attrerrors")  # with `batcherror: 1`: every attribute error
        if isinstance(more, list):
            others = [_said(e["Error"]) for e in more
                      if isinstance(e, dict) and isinstance(e.get("Error"), dict)]
            others = [o for o in others if o and o != said]
            if others:
                said = f"{said} (also: {'; '.join(others)})"
        if said:
            return said[:MAX_REASON]
    return problem_text(answer, content_type)


def _said(err: dict[str, Any]) -> str:
    code = str(err.get("reasonCode") or "")
    message = str(err.get("message") or "")
    return message if code and message.startswith(code) else " - ".join(
        p for p in (code, message) if p)


def members(answer: bytes) -> list[dict[str, Any]] | None:
    """`member[]` of a lean collection answer; None when the body is not one."""
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    found = doc.get("member") if isinstance(doc, dict) else None
    if not isinstance(found, list):
        return None
    return [m for m in found if isinstance(m, dict)]


def json_object(answer: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def link_marker(body: Mapping[str, Any]) -> str:
    return f"PlantBridge evidence ({body.get('dedup_key', '')})"


def link_entry(body: Mapping[str, Any]) -> dict[str, Any]:
    """A work log note with our evidence, on an open SR someone else made (existing_work =
    link); its description carries the dedup key so a retried link does not add it twice."""
    return {
        "description": link_marker(body)[:WORKLOG_DESCRIPTION_MAX],
        "description_longdescription": "\n".join([
            str(body.get("title", "")), str(body.get("reason", "")),
            f"Rule: {body.get('rule_id', '')}, severity {body.get('severity', '')}",
            f"Raised at: {body.get('raised_at', '')}",
            f"Episode: {body.get('episode_id', '')}",
        ]),
    }


def failed(record_id: int, got: Answer, step: str = "") -> Delivery:
    """A non-2xx answer as a Delivery, quoting Maximo's reasonCode and message."""
    verdict = classify_status(got.status, maximo_error(got.body, got.content_type),
                              got.retry_after)
    reason = f"{step}: {verdict.reason}" if step else verdict.reason
    outcome = verdict.outcome
    if got.status == 412:  # still stale after a fresh read: a busy record, try again later
        outcome, reason = Outcome.RETRY, reason + " (record busy: updated again meanwhile)"
    return Delivery(record_id, outcome, reason=reason[:MAX_REASON],
                    retry_after_seconds=verdict.retry_after_seconds)


def has_note(record: Mapping[str, Any], marker: str) -> bool:
    """Whether the record's work log has a note whose description starts with `marker`."""
    notes = record.get("worklog")
    return isinstance(notes, list) and any(
        isinstance(n, dict) and str(n.get("description", "")).startswith(marker) for n in notes)


def prefixed(d: Delivery, what: str) -> Delivery:
    return replace(d, reason=f"{what}: {d.reason}"[:MAX_REASON])


def patch_delivery(record_id: int, got: Answer | BaseException, what: str, receipt: str,
                   attempt: int, unclear_after: float) -> Delivery | None:
    """The Delivery a PATCH's answer means; None when the record changed since we read it
    (412 on the first attempt): read it again and retry, once."""
    if isinstance(got, BaseException):  # it may still commit: read it later
        return Delivery(record_id, Outcome.RETRY, reason=f"{what}: {transport_reason(got)}",
                        retry_after_seconds=unclear_after)
    if got.status == 412 and attempt == 1:
        return None
    if not 200 <= got.status < 300:
        return failed(record_id, got, what)
    return Delivery(record_id, Outcome.ACCEPTED, receipt=receipt)
