"""Service requests (TICKET, class SR) as the simulated Maximo keeps them, with its validation.

Plain data and rules, no HTTP: `SrStore.create(fields)` / `update(...)` return the record or
raise `MaximoError` (reasonCode, message, HTTP status), which the server renders as the
`{"Error": {...}}` JSON. No dedup on create: Maximo has none, a repeated POST is a new SR.

Message codes: BMXAA7901E (login), BMXAA4021E (domain), BMXAA8229W (updated by another
user) come from IBM material (UPSTREAM-APIS.md §2). The others are the simulator's best guess
of the code Maximo uses for that case: match on the status and the meaning, not the number.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# attribute -> max length (str) or None (not a string); read-only ones are set by the server
WRITABLE: dict[str, int | None] = {
    "description": 100,
    "description_longdescription": 32000,
    "assetnum": 25,
    "location": 30,
    "siteid": 8,
    "orgid": 8,
    "reportedby": 30,
    "affectedperson": 30,
    "reportedpriority": None,
    "externalrecid": 20,
    "externalsystem": 20,
    "status": 10,
}
READ_ONLY = ("ticketid", "ticketuid", "class", "statusdate", "reportdate", "changedate",
             "_rowstamp", "href")
CHILDREN = ("worklog",)
WORKLOG_WRITABLE: dict[str, int | None] = {"description": 100,
                                           "description_longdescription": 32000,
                                           "logtype": 16, "worklogid": None}
KNOWN = frozenset(WRITABLE) | frozenset(READ_ONLY) | frozenset(CHILDREN)

# status -> the statuses it may change to (Maximo's SR lifecycle; synonyms not modelled)
TRANSITIONS: dict[str, frozenset[str]] = {
    "NEW": frozenset({"QUEUED", "INPROG", "PENDING", "RESOLVED", "CLOSED", "CANCELLED"}),
    "QUEUED": frozenset({"INPROG", "PENDING", "RESOLVED", "CLOSED", "CANCELLED"}),
    "INPROG": frozenset({"QUEUED", "PENDING", "RESOLVED", "CLOSED", "CANCELLED"}),
    "PENDING": frozenset({"QUEUED", "INPROG", "RESOLVED", "CLOSED", "CANCELLED"}),
    "RESOLVED": frozenset({"INPROG", "CLOSED"}),
    "CLOSED": frozenset(),
    "CANCELLED": frozenset(),
}


class MaximoError(Exception):
    """One error; `attr_errors` holds every attribute error of a request (the first one is
    this error itself), shown as `attrerrors` when the client sent `batcherror: 1`."""

    def __init__(self, status: int, code: str, message: str, attr: str | None = None) -> None:
        super().__init__(f"{code} - {message}")
        self.status = status
        self.code = code
        self.message = f"{code} - {message}"
        self.attr = attr
        self.attr_errors: list[MaximoError] = []

    def as_json(self, error_base: str, *, batch: bool = False) -> dict[str, Any]:
        """Maximo's error body; note that statusCode is a string."""
        err: dict[str, Any] = {
            "extendedError": {"moreInfo": {"href": f"{error_base}/{self.code}"}},
            "reasonCode": self.code,
            "message": self.message,
            "statusCode": str(self.status),
        }
        if batch and self.attr_errors:
            err["attrerrors"] = [{"Error": {
                "errorattrname": e.attr, "errorobjpath": "sr", "reasonCode": e.code,
                "message": e.message, "statusCode": str(e.status)}} for e in self.attr_errors]
        return {"Error": err}


def not_authorized() -> MaximoError:
    return MaximoError(401, "BMXAA7901E",
                       "You cannot log in at this time. Contact the system administrator.")


def stale(ticketid: str) -> MaximoError:
    return MaximoError(412, "BMXAA8229W", f"Record SR : Ticket ID={ticketid} has been updated "
                                         "by another user. Your changes have not been saved. "
                                         "Refresh the record and try again.")


def restid_of(ticketid: str) -> str:
    """Maximo-style rest id: `_` + base64 of the key, '=' padding written as '-'."""
    raw = base64.b64encode(f"SR/{ticketid}".encode()).decode()
    return "_" + raw.replace("=", "-")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Domains:
    """What the site has configured: known assets (assetnum -> siteid; None: any) and the
    reportedpriority domain."""

    assets: Mapping[str, str] | None
    priorities: frozenset[int]


class SrStore:
    """The TICKET table of the simulator, in memory."""

    def __init__(self, domains: Domains, clock: Callable[[], str] = _now) -> None:
        self.domains = domains
        self.tickets: list[dict[str, Any]] = []
        self._clock = clock
        self._numbers = itertools.count(1001)
        self._uids = itertools.count(1)
        self._worklog_ids = itertools.count(1)
        self._rowstamps = itertools.count(100_000)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The SRs, under the name the other object structures' tables use."""
        return self.tickets

    def restid(self, ticket: Mapping[str, Any]) -> str:
        return restid_of(ticket["ticketid"])

    def by_restid(self, restid: str) -> dict[str, Any] | None:
        return next((t for t in self.tickets if restid_of(t["ticketid"]) == restid), None)

    def create(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        data = self._checked(fields, creating=True)
        if data.get("status", "NEW") != "NEW":
            raise MaximoError(400, "BMXAA4590E", "A new service request must be in status NEW.")
        now = self._clock()
        ticket: dict[str, Any] = {
            "ticketid": str(next(self._numbers)), "ticketuid": next(self._uids), "class": "SR",
            "status": "NEW", "statusdate": now, "reportdate": now, "changedate": now,
        }
        ticket.update({k: v for k, v in data.items() if k not in ("status", "worklog")})
        ticket["worklog"] = [self._worklog(w) for w in data.get("worklog", [])]
        ticket["_rowstamp"] = str(next(self._rowstamps))
        self.tickets.append(ticket)
        return ticket

    def update(self, ticket: dict[str, Any], fields: Mapping[str, Any], *, merge: bool,
               expected_rowstamp: str | None) -> dict[str, Any]:
        """PATCH semantics: given attributes change; `worklog` is merged (patchtype MERGE) or
        replaced (plain PATCH). `expected_rowstamp` (If-Match or `_rowstamp`) must be current."""
        body_rowstamp = fields.get("_rowstamp")
        for want in (expected_rowstamp, body_rowstamp):
            if want is not None and str(want) != ticket["_rowstamp"]:
                raise stale(ticket["ticketid"])
        data = self._checked({k: v for k, v in fields.items() if k != "_rowstamp"},
                             creating=False, site=ticket.get("siteid"))
        if "status" in data and data["status"] != ticket["status"]:
            new, old = data["status"], ticket["status"]
            if new not in TRANSITIONS:
                raise MaximoError(400, "BMXAA4021E", f"Value {new} is not valid for field STATUS")
            if new not in TRANSITIONS.get(old, frozenset()):
                raise MaximoError(400, "BMXAA4590E", f"The status cannot be changed from "
                                                     f"{old} to {new}.")
            ticket["status"] = new
            ticket["statusdate"] = self._clock()
        for key, value in data.items():
            if key not in ("status", "worklog"):
                ticket[key] = value
        if "worklog" in data:
            self._apply_worklog(ticket, data["worklog"], merge)
        ticket["changedate"] = self._clock()
        ticket["_rowstamp"] = str(next(self._rowstamps))
        return ticket

    def touch(self, ticket: dict[str, Any]) -> None:
        """Someone else saved the record: a new rowstamp."""
        ticket["changedate"] = self._clock()
        ticket["_rowstamp"] = str(next(self._rowstamps))

    # --- validation ----------------------------------------------------------------------

    def _checked(self, fields: Mapping[str, Any], *, creating: bool,
                 site: str | None = None) -> dict[str, Any]:
        """The fields, validated; every attribute error is collected, the first raised."""
        data: dict[str, Any] = {}
        errors: list[MaximoError] = []
        for raw_key, value in fields.items():
            key = raw_key.lower()
            try:
                data[key] = self._checked_attr(key, value)
            except MaximoError as exc:
                exc.attr = key
                errors.append(exc)
        prio = data.get("reportedpriority")
        if prio is not None and (not isinstance(prio, int) or isinstance(prio, bool)
                                 or prio not in self.domains.priorities):
            errors.append(MaximoError(400, "BMXAA4021E", f"Value {prio} is not valid for "
                                      "field REPORTEDPRIORITY", "reportedpriority"))
        if creating and "assetnum" in data and not data.get("siteid"):
            errors.append(MaximoError(400, "BMXAA4195E", "A value is required for the SITEID "
                                      "field when an asset is given.", "siteid"))
        assetnum = data.get("assetnum")
        if assetnum is not None and self.domains.assets is not None:
            at = data.get("siteid") or site
            if self.domains.assets.get(assetnum) != at:
                errors.append(MaximoError(400, "BMXAA2661E", f"Asset {assetnum} is not a valid"
                                          f" asset at site {at}.", "assetnum"))
        if errors:
            errors[0].attr_errors = errors
            raise errors[0]
        return data

    def _checked_attr(self, key: str, value: Any) -> Any:
        if key in READ_ONLY:
            raise MaximoError(400, "BMXAA4047E", f"Attribute {key.upper()} is read-only.")
        if key == "worklog":
            return self._checked_worklog(value)
        if key not in WRITABLE:
            raise MaximoError(400, "BMXAA8094E", f"Attribute {key.upper()} does not exist "
                                                 "in object structure MXAPISR.")
        return _checked_value(key, value, WRITABLE[key])

    def _checked_worklog(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise MaximoError(400, "BMXAA1470E", "WORKLOG must be an array.")
        out = []
        for item in value:
            if not isinstance(item, dict):
                raise MaximoError(400, "BMXAA1470E", "A WORKLOG entry must be an object.")
            entry: dict[str, Any] = {}
            for raw_key, v in item.items():
                key = raw_key.lower()
                if key not in WORKLOG_WRITABLE:
                    raise MaximoError(400, "BMXAA8094E", f"Attribute {key.upper()} does not "
                                                         "exist in WORKLOG.")
                entry[key] = _checked_value(key, v, WORKLOG_WRITABLE[key])
            out.append(entry)
        return out

    def _worklog(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        return {"worklogid": next(self._worklog_ids), "logtype": "CLIENTNOTE",
                "createdate": self._clock()} | {k: v for k, v in entry.items()
                                                 if k != "worklogid"}

    def _apply_worklog(self, ticket: dict[str, Any], entries: list[dict[str, Any]],
                       merge: bool) -> None:
        if not merge:
            ticket["worklog"] = [self._worklog(e) for e in entries]
            return
        current: list[dict[str, Any]] = ticket["worklog"]
        for entry in entries:
            match = next((w for w in current if "worklogid" in entry
                          and w["worklogid"] == entry["worklogid"]), None)
            if match is None:
                current.append(self._worklog(entry))
            else:
                match.update({k: v for k, v in entry.items() if k != "worklogid"})


def _checked_value(key: str, value: Any, max_len: int | None) -> Any:
    if max_len is None:
        return value
    if value is None:
        return None
    if not isinstance(value, str):
        raise MaximoError(400, "BMXAA4191E", f"The value for {key.upper()} must be text.")
    if len(value) > max_len:
        raise MaximoError(400, "BMXAA4049E", f"The value specified for {key.upper()} exceeds "
                                             f"the maximum field length of {max_len}.")
    return value.upper() if key in ("status", "siteid", "orgid") else value
