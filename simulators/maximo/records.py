"""Object structures other than `mxapisr`: work orders, inventory, reservations, requisitions.

One small table type (`RecordTable`) serves all of them, each described by a `TableSpec`: its
key attribute (generated on create), writable attributes with their lengths, child arrays,
status lifecycle and the checks a create must pass. Plain data and rules, no HTTP; errors are
`MaximoError`, rendered by the server. No dedup of its own anywhere: a repeated POST makes a
second record, as Maximo does.

What the shared docs say (UPSTREAM-WORKFLOW-APIS.md §2-3) and how sure each part is:

* `mxapiwodetail`: work orders keyed by `wonum` + siteid, statuses WAPPR, APPR, WSCH, WMATL,
  WPCOND, INPRG, COMP, CLOSE, CAN, HISTEDIT [S]; `failurecode`, `worklog` child as on the SR
  [S*]. The status-change matrix here (CLOSE, CAN, HISTEDIT final; COMP only to CLOSE) is the
  usual one, not vendor-checked [U].
* `mxapiinventory`: `itemnum`, `location` (the storeroom), `siteid`, `curbal`, `issueunit`
  [T, a live probe]. Read only here; tests plant stock with `MaximoSimulator.set_stock`.
* `mxapiinvres` (INVRESERVE): `invreserveid, requestnum, itemnum, wonum, location, tostoreloc,
  storelocsiteid, reservedqty, requireddate, restype, mrnum, binnum, assetnum` [S*]. That a
  client may set `requestnum`, the RESTYPE values and the "item must be stocked in that
  storeroom" check are assumptions [U].
* `mxapipr`: seen only in a third-party table [T]; the PR/PRLINE attributes used here
  (`prnum`, `siteid`, `description`, `status`, `externalrefid`, `prline{itemnum, orderqty,
  orderunit, storeloc, linetype}`) are the MXPR integration object's usual ones [U].
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulators.maximo.tickets import MaximoError

# attribute -> max length (text) or None (a number or anything else)
Fields = Mapping[str, int | None]
Check = Callable[["RecordTable", dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What one object structure holds and accepts."""

    name: str  # the object structure, e.g. "mxapiwodetail"
    mbo: str  # its main object, used in rest ids and messages: "WORKORDER"
    key: str  # the generated number: "wonum"
    first_number: int
    writable: Fields
    read_only: tuple[str, ...] = ()
    children: Mapping[str, Fields] = field(default_factory=dict)  # child -> its fields
    statuses: Mapping[str, frozenset[str]] = field(default_factory=dict)  # lifecycle
    initial_status: str | None = None
    numbers: tuple[str, ...] = ()  # attributes that must be numbers
    required: tuple[str, ...] = ()
    creatable: bool = True
    checks: tuple[Check, ...] = ()

    @property
    def known(self) -> frozenset[str]:
        return (frozenset(self.writable) | frozenset(self.read_only) | frozenset(self.children)
                | {self.key, "status", "_rowstamp", "href"})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RecordTable:
    """The rows of one object structure, in memory."""

    def __init__(self, spec: TableSpec, clock: Callable[[], str] = _now) -> None:
        self.spec = spec
        self.records: list[dict[str, Any]] = []
        self.lookups: dict[str, RecordTable] = {}  # other tables the checks consult
        self._clock = clock
        self._numbers = itertools.count(spec.first_number)
        self._child_ids = itertools.count(1)
        self._rowstamps = itertools.count(500_000)

    def restid(self, record: Mapping[str, Any]) -> str:
        raw = base64.b64encode(f"{self.spec.mbo}/{record[self.spec.key]}".encode()).decode()
        return "_" + raw.replace("=", "-")

    def by_restid(self, restid: str) -> dict[str, Any] | None:
        return next((r for r in self.records if self.restid(r) == restid), None)

    def plant(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A row as someone else made it (tests): no validation, the key generated if absent."""
        row = dict(fields)
        row.setdefault(self.spec.key, str(next(self._numbers)))
        if self.spec.initial_status is not None:
            row.setdefault("status", self.spec.initial_status)
        for child in self.spec.children:
            row[child] = [self._child(child, c) for c in row.get(child, [])]
        row["changedate"] = self._clock()
        row["_rowstamp"] = str(next(self._rowstamps))
        self.records.append(row)
        return row

    def create(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        if not self.spec.creatable:
            raise MaximoError(400, "BMXAA9549E", f"the simulator's {self.spec.name} answers "
                                                 "queries only")
        data = self._checked(fields)
        missing = [a for a in self.spec.required if data.get(a) in (None, "")]
        if missing:
            raise MaximoError(400, "BMXAA4195E", f"A value is required for the "
                                                 f"{missing[0].upper()} field.", missing[0])
        status = data.pop("status", self.spec.initial_status)
        if self.spec.initial_status is not None and status != self.spec.initial_status:
            raise MaximoError(400, "BMXAA4590E", f"A new {self.spec.mbo} must be in status "
                                                 f"{self.spec.initial_status}.")
        for check in self.spec.checks:
            check(self, data)
        row = {k: v for k, v in data.items() if k not in self.spec.children}
        row[self.spec.key] = str(next(self._numbers))
        if status is not None:
            row["status"] = status
            row["statusdate"] = self._clock()
        for child in self.spec.children:
            row[child] = [self._child(child, c) for c in data.get(child, [])]
        row["changedate"] = self._clock()
        row["_rowstamp"] = str(next(self._rowstamps))
        self.records.append(row)
        return row

    def update(self, row: dict[str, Any], fields: Mapping[str, Any], *, merge: bool,
               expected_rowstamp: str | None) -> dict[str, Any]:
        """PATCH: given attributes change; child arrays merge (patchtype MERGE) or are
        replaced (plain PATCH); a stale rowstamp is a 412 BMXAA8229W."""
        for want in (expected_rowstamp, fields.get("_rowstamp")):
            if want is not None and str(want) != row["_rowstamp"]:
                raise MaximoError(412, "BMXAA8229W", f"Record {self.spec.mbo} : "
                                  f"{self.spec.key}={row[self.spec.key]} has been updated by "
                                  "another user. Your changes have not been saved. Refresh "
                                  "the record and try again.")
        data = self._checked({k: v for k, v in fields.items() if k != "_rowstamp"})
        if "status" in data and data["status"] != row.get("status"):
            self._move(row, str(data["status"]))
        for key, value in data.items():
            if key == "status":
                continue
            if key in self.spec.children:
                made = [self._child(key, c) for c in value]
                row[key] = [*row.get(key, []), *made] if merge else made
            else:
                row[key] = value
        self.touch(row)
        return row

    def set_status(self, row: dict[str, Any], status: str) -> None:
        """What a planner does (tests): no lifecycle check."""
        row["status"] = status
        row["statusdate"] = self._clock()
        self.touch(row)

    def touch(self, row: dict[str, Any]) -> None:
        row["changedate"] = self._clock()
        row["_rowstamp"] = str(next(self._rowstamps))

    # --- validation ----------------------------------------------------------------------

    def _move(self, row: dict[str, Any], new: str) -> None:
        old = str(row.get("status"))
        if new not in self.spec.statuses:
            raise MaximoError(400, "BMXAA4021E", f"Value {new} is not valid for field STATUS")
        if new not in self.spec.statuses.get(old, frozenset()):
            raise MaximoError(400, "BMXAA4590E", f"The status cannot be changed from {old} "
                                                 f"to {new}.")
        row["status"] = new
        row["statusdate"] = self._clock()

    def _checked(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for raw_key, value in fields.items():
            key = raw_key.lower()
            if key in self.spec.read_only or key == self.spec.key:
                raise MaximoError(400, "BMXAA4047E", f"Attribute {key.upper()} is read-only.",
                                  key)
            if key in self.spec.children:
                data[key] = self._checked_children(key, value)
            elif key == "status" and self.spec.statuses:
                data[key] = _text(key, value, 16).upper()
            elif key in self.spec.writable:
                data[key] = self._value(key, value, self.spec.writable[key])
            else:
                raise MaximoError(400, "BMXAA8094E", f"Attribute {key.upper()} does not exist "
                                  f"in object structure {self.spec.name.upper()}.", key)
        return data

    def _value(self, key: str, value: Any, max_len: int | None) -> Any:
        if key in self.spec.numbers:
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise MaximoError(400, "BMXAA4191E", f"The value for {key.upper()} must be a "
                                                     "positive number.", key)
            return value
        if max_len is None or value is None:
            return value
        return _text(key, value, max_len)

    def _checked_children(self, child: str, value: Any) -> list[dict[str, Any]]:
        allowed = self.spec.children[child]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise MaximoError(400, "BMXAA1470E", f"{child.upper()} must be an array of "
                                                 "objects.", child)
        out = []
        for item in value:
            entry: dict[str, Any] = {}
            for raw_key, v in item.items():
                key = raw_key.lower()
                if key not in allowed:
                    raise MaximoError(400, "BMXAA8094E", f"Attribute {key.upper()} does not "
                                                         f"exist in {child.upper()}.", key)
                entry[key] = v if allowed[key] is None else _text(key, v, allowed[key] or 0)
            out.append(entry)
        return out

    def _child(self, child: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        made = {f"{child}id": next(self._child_ids), "createdate": self._clock()}
        return made | dict(entry)


def _text(key: str, value: Any, max_len: int) -> str:
    if not isinstance(value, str):
        raise MaximoError(400, "BMXAA4191E", f"The value for {key.upper()} must be text.", key)
    if len(value) > max_len:
        raise MaximoError(400, "BMXAA4049E", f"The value specified for {key.upper()} exceeds "
                                             f"the maximum field length of {max_len}.", key)
    return value
