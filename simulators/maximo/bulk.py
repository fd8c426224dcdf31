"""`POST <collection>` + `x-method-override: BULK`: several operations in one request.

Each array item is a create (a plain object), or `{"_data": {...}, "_meta": {"uri": <member>,
"method": "PATCH" | "DELETE", "patchtype": "MERGE"}}` on an existing member. The answer is 200
with one `{"_responsemeta": {"_bulkid", "status"}, "_responsedata": {...}}` per item, in
order; an item that fails carries the Error JSON and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from simulators.maximo.tickets import MaximoError, SrStore


@dataclass(frozen=True, slots=True)
class BulkRendering:
    """How the server shows a ticket and an error inside the answer."""

    view: Callable[[dict[str, Any]], dict[str, Any]]  # the properties asked for, or the href
    error: Callable[[MaximoError], dict[str, Any]]


def run_bulk(store: SrStore, items: Any, show: BulkRendering) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise MaximoError(400, "BMXAA1470E", "A BULK request body must be a JSON array.")
    return [_one(store, item, i, show) for i, item in enumerate(items)]


def _one(store: SrStore, item: Any, index: int, show: BulkRendering) -> dict[str, Any]:
    bulkid = str(item.get("_bulkid", index + 1)) if isinstance(item, dict) else str(index + 1)
    try:
        status, data = _apply(store, item, show)
    except MaximoError as exc:
        status, data = exc.status, show.error(exc)
    meta: dict[str, Any] = {"_bulkid": bulkid, "status": status}
    return {"_responsemeta": meta, "_responsedata": data} if data else {"_responsemeta": meta}


def _apply(store: SrStore, item: Any, show: BulkRendering) -> tuple[int, dict[str, Any]]:
    if not isinstance(item, dict):
        raise MaximoError(400, "BMXAA1470E", "A BULK item must be a JSON object.")
    fields = {k: v for k, v in item.get("_data", item).items() if k not in ("_meta", "_bulkid")}
    meta = item.get("_meta")
    if meta is None:
        return 201, show.view(store.create(fields))
    if not isinstance(meta, dict):
        raise MaximoError(400, "BMXAA1470E", "_meta must be a JSON object.")
    restid = urlsplit(str(meta.get("uri", ""))).path.rstrip("/").rsplit("/", 1)[-1]
    ticket = store.by_restid(restid)
    if ticket is None:
        raise MaximoError(404, "BMXAA8727E", f"The OSLC resource with the ID {restid} was not "
                                             "found as it does not exist in the system.")
    method = str(meta.get("method", "PATCH")).upper()
    if method == "DELETE":
        store.tickets.remove(ticket)
        return 204, {}
    if method != "PATCH":
        raise MaximoError(400, "BMXAA9549E", f"BULK method {method} is not supported")
    store.update(ticket, fields, merge=meta.get("patchtype") == "MERGE",
                 expected_rowstamp=None)
    return 204, {}
