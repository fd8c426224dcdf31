"""The CMMS resources and their rules, free of HTTP plumbing: validation, ids, problem bodies."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from simulators.cmms.idempotency import StoredResponse

PROBLEM = "application/problem+json"
PROBLEM_BASE = "https://cmms-sim.invalid/problems/"
REQUESTS_PATH = "/api/v1/maintenance-requests"
ASSET_STATUS_PATH = "/api/v1/asset-status"
STATUSES = frozenset({"open", "acknowledged", "in_progress", "cleared", "resolved", "closed",
                      "cancelled", "rejected"})
MAX_TITLE = 200
MAX_EXTERNAL_REF = 20


_last_iso: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The time now, to the millisecond (formatted once per millisecond: at thousands of
    requests a second the formatting cost more than the rest of a create)."""
    global _last_iso
    ms = time.time_ns() // 1_000_000
    if ms != _last_iso[0]:
        at = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
        _last_iso = (ms, at.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return _last_iso[1]


def problem(status: int, kind: str, title: str, detail: str, **ext: Any) -> StoredResponse:
    """An RFC 7807 problem document."""
    doc = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail, **ext}
    return StoredResponse(status, {"Content-Type": PROBLEM}, orjson.dumps(doc))


def created(doc: dict[str, Any], location: str) -> StoredResponse:
    return StoredResponse(201, {"Content-Type": "application/json", "Location": location},
                          orjson.dumps(doc))


def parse_json_object(body: bytes) -> dict[str, Any] | StoredResponse:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return problem(400, "malformed-json", "Malformed JSON", f"the body is not JSON: {exc}")
    if not isinstance(data, dict):
        return problem(400, "malformed-json", "Malformed JSON", "the body must be a JSON object")
    return data


def valid_object(body: bytes, errors_of: Callable[[dict[str, Any]], list[dict[str, str]]]
                 ) -> dict[str, Any] | StoredResponse:
    """The body as a JSON object in which `errors_of` finds nothing wrong, or the answer that
    says what is wrong with it (400 not a JSON object, 422 invalid fields)."""
    data = parse_json_object(body)
    if isinstance(data, StoredResponse):
        return data
    errors = errors_of(data)
    return invalid(errors) if errors else data


def _text(data: dict[str, Any], name: str, max_len: int, required: bool) -> dict[str, str] | None:
    value = data.get(name)
    if value is None:
        return {"field": name, "message": "required"} if required else None
    if not isinstance(value, str):
        return {"field": name, "message": "must be a string"}
    if required and not value.strip():
        return {"field": name, "message": "must not be empty"}
    if len(value) > max_len:
        return {"field": name, "message": f"longer than {max_len} characters"}
    return None


def _small_int(data: dict[str, Any], name: str) -> dict[str, str] | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
        return {"field": name, "message": "must be an integer from 1 to 4"}
    return None


def request_errors(data: dict[str, Any]) -> list[dict[str, str]]:
    """What is wrong with a maintenance request body (empty when it is acceptable)."""
    found = [
        _text(data, "title", MAX_TITLE, True),
        _text(data, "asset", 100, True),
        _text(data, "external_ref", MAX_EXTERNAL_REF, False),
        _text(data, "dedup_key", MAX_EXTERNAL_REF, False),
        _text(data, "long_text", 4000, False),
        _small_int(data, "priority"),
        _small_int(data, "severity"),
    ]
    return [e for e in found if e is not None]


def status_errors(data: dict[str, Any]) -> list[dict[str, str]]:
    err = _text(data, "status", 40, True)
    if err is None and data["status"] not in STATUSES:
        err = {"field": "status", "message": f"must be one of {sorted(STATUSES)}"}
    return [] if err is None else [err]


def asset_status_errors(data: dict[str, Any]) -> list[dict[str, str]]:
    """An asset status names its asset and says alarm or normal."""
    found = [_text(data, "asset", 100, True), _text(data, "state", 20, True)]
    if found[1] is None and data["state"] not in ("alarm", "normal"):
        found[1] = {"field": "state", "message": "must be 'alarm' or 'normal'"}
    return [e for e in found if e is not None]


def invalid(errors: list[dict[str, str]]) -> StoredResponse:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "validation", "Validation failed", detail, errors=errors)


def external_ref(body: dict[str, Any]) -> str | None:
    ref = body.get("external_ref") or body.get("dedup_key")
    return str(ref) if ref is not None else None


def request_view(rec: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a maintenance request."""
    body = rec["body"]
    return {"id": rec["id"], "status": rec["status"], "title": body.get("title"),
            "asset": body.get("asset"), "priority": body.get("priority"),
            "external_ref": rec["external_ref"], "created_at": rec["created_at"],
            "status_history": rec["status_history"]}


def update_view(upd: dict[str, Any]) -> dict[str, Any]:
    return {"id": upd["id"], "request_id": upd["request_id"], "status": upd["body"]["status"],
            "created_at": upd["created_at"]}
