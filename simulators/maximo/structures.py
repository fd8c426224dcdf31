"""The object structures of the simulated Maximo besides `mxapisr` and `mxapiasset`.

Each is a `TableSpec` (simulators/maximo/records.py says which facts are [S], [S*], [T] or
[U]); `build_tables` makes their tables and the cross-checks between them (an asset must
exist at its site, a reservation's item must be stocked in its storeroom, a named work order
must exist).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulators.maximo.records import RecordTable, TableSpec
from simulators.maximo.tickets import MaximoError

WORKLOG: Mapping[str, int | None] = {"description": 100, "description_longdescription": 32000,
                                     "logtype": 16}
# WO lifecycle [S] for the values; which moves are allowed is the common setup [U]
WO_OPEN = ("WAPPR", "APPR", "WSCH", "WMATL", "WPCOND", "INPRG")
_ANY_OPEN = frozenset({*WO_OPEN, "COMP", "CAN"})
WO_STATUSES: Mapping[str, frozenset[str]] = {
    **{s: _ANY_OPEN - {s} for s in WO_OPEN},
    "COMP": frozenset({"CLOSE"}),
    "CLOSE": frozenset(), "CAN": frozenset(), "HISTEDIT": frozenset(),
}
# RESTYPE values as commonly configured [U]
RESTYPES = frozenset({"AUTOMATIC", "APHARD", "APSOFT", "HARD", "SOFT", "MANUAL"})


def _asset_at_site(assets: Mapping[str, str] | None, data: Mapping[str, Any]) -> None:
    assetnum = data.get("assetnum")
    if assetnum is None or assets is None:
        return
    site = data.get("siteid") or data.get("storelocsiteid")
    if assets.get(str(assetnum)) != site:
        raise MaximoError(400, "BMXAA2661E", f"Asset {assetnum} is not a valid asset at site "
                                             f"{site}.", "assetnum")


def _stocked(table: RecordTable, data: dict[str, Any]) -> None:
    """A reservation's item must have an inventory record in its storeroom [U]."""
    inventory = table.lookups["mxapiinventory"].records
    site = data.get("storelocsiteid") or data.get("siteid")
    if not any(r["itemnum"] == data.get("itemnum") and r["location"] == data.get("location")
               and r["siteid"] == site for r in inventory):
        raise MaximoError(400, "BMXAA2523E", f"Item {data.get('itemnum')} is not stocked in "
                                             f"storeroom {data.get('location')} at site "
                                             f"{site}.", "itemnum")
    wonum = data.get("wonum")
    if wonum is not None and not any(w["wonum"] == wonum
                                     for w in table.lookups["mxapiwodetail"].records):
        raise MaximoError(400, "BMXAA4214E", f"Work order {wonum} does not exist.", "wonum")
    restype = str(data.get("restype") or "AUTOMATIC").upper()
    if restype not in RESTYPES:
        raise MaximoError(400, "BMXAA4021E", f"Value {restype} is not valid for field "
                                             "RESTYPE", "restype")


def _prlines(table: RecordTable, data: dict[str, Any]) -> None:
    lines = data.get("prline") or []
    if not lines:
        raise MaximoError(400, "BMXAA4195E", "A purchase requisition needs at least one "
                                             "PRLINE.", "prline")
    for line in lines:
        qty = line.get("orderqty")
        if isinstance(qty, bool) or not isinstance(qty, int | float) or qty <= 0:
            raise MaximoError(400, "BMXAA4191E", "PRLINE.ORDERQTY must be a positive number.",
                              "orderqty")
        if not line.get("itemnum"):
            raise MaximoError(400, "BMXAA4195E", "A value is required for PRLINE.ITEMNUM.",
                              "itemnum")


def build_tables(assets: Mapping[str, str] | None) -> dict[str, RecordTable]:
    """object structure (lower case) -> its table. `assets`: assetnum -> siteid, or None to
    accept any asset (as the SR store does)."""

    def asset_check(_table: RecordTable, data: dict[str, Any]) -> None:
        _asset_at_site(assets, data)

    specs = [
        TableSpec(
            name="mxapiwodetail", mbo="WORKORDER", key="wonum", first_number=5001,
            writable={"description": 100, "description_longdescription": 32000,
                      "assetnum": 25, "location": 30, "siteid": 8, "orgid": 8,
                      "failurecode": 8, "problemcode": 8, "worktype": 5, "wopriority": None,
                      "externalrefid": 20, "reportedby": 30},
            read_only=("workorderid", "statusdate", "reportdate", "changedate"),
            children={"worklog": WORKLOG}, statuses=WO_STATUSES, initial_status="WAPPR",
            required=("siteid",), checks=(asset_check,)),
        TableSpec(
            name="mxapiinventory", mbo="INVENTORY", key="inventoryid", first_number=1,
            writable={"itemnum": 30, "location": 12, "siteid": 8, "curbal": None,
                      "issueunit": 16, "itemsetid": 8, "minlevel": None},
            creatable=False),
        TableSpec(
            name="mxapiinvres", mbo="INVRESERVE", key="invreserveid", first_number=301,
            writable={"requestnum": 20, "itemnum": 30, "wonum": 25, "location": 12,
                      "tostoreloc": 12, "storelocsiteid": 8, "siteid": 8,
                      "reservedqty": None, "requireddate": 32, "restype": 16, "mrnum": 20,
                      "binnum": 8, "assetnum": 25, "description": 100},
            numbers=("reservedqty",), required=("itemnum", "location", "reservedqty"),
            checks=(_stocked, asset_check)),
        TableSpec(
            name="mxapipr", mbo="PR", key="prnum", first_number=9001,
            writable={"siteid": 8, "orgid": 8, "description": 100, "externalrefid": 20,
                      "requireddate": 32, "requestedby": 30},
            children={"prline": {"itemnum": 30, "orderqty": None, "orderunit": 16,
                                 "storeloc": 12, "linetype": 15, "remark": 254,
                                 "description": 100}},
            statuses={"WAPPR": frozenset({"APPR", "CAN"}), "APPR": frozenset({"CAN", "COMP"}),
                      "CAN": frozenset(), "COMP": frozenset()},
            initial_status="WAPPR", required=("siteid",), checks=(_prlines,)),
        # numeric domain values (IBM's SR app test data [S*]): read only, seeded
        TableSpec(
            name="mxapinumericdomain", mbo="NUMERICDOMAIN", key="valueid", first_number=1,
            writable={"domainid": 18, "value": None, "description": 100}, creatable=False),
        # the failure hierarchy: a class has no parent; problems, causes, remedies sit below
        # (IBM's technician app test data [S*]; `parent` and `type` as Maximo's FAILURELIST [U])
        TableSpec(
            name="mxapifailurelist", mbo="FAILURELIST", key="failurelist", first_number=2000,
            writable={"failurecode": 8, "parent": None, "orgid": 8, "type": 16},
            creatable=False),
    ]
    tables = {s.name: RecordTable(s) for s in specs}
    for table in tables.values():
        table.lookups = tables
    return tables


# What the demo site has configured: failure classes with the problems below them, and (for
# the demo assets) a storeroom with the two bearing parts, the bearing below a typical reorder
# level. Tests that need other data pass their own or plant it.
DEMO_FAILURE_CODES: Mapping[str, tuple[str, ...]] = {
    "BEARING": ("NOISE", "OVERHEAT"), "PUMPS": ("LEAK",), "ELEC": ("SHORT",), "VIB": (),
}


def seed(tables: Mapping[str, RecordTable], *, priorities: Iterable[int],
         failure_codes: Mapping[str, Iterable[str]], orgid: str = "EAGLENA",
         demo_inventory: bool = False) -> None:
    for value in sorted(priorities):
        tables["mxapinumericdomain"].plant({"domainid": "TICKETPRIORITY",
                                            "value": float(value),
                                            "description": f"Priority {value}"})
    failures = tables["mxapifailurelist"]
    for code, below in failure_codes.items():
        top = failures.plant({"failurecode": code, "parent": None, "orgid": orgid,
                              "type": None})
        for problem in below:
            failures.plant({"failurecode": problem, "parent": int(top["failurelist"]),
                            "orgid": orgid, "type": "PROBLEM"})
    if demo_inventory:
        for item, balance in (("BRG-6205", 1.0), ("SEAL-40", 10.0)):
            tables["mxapiinventory"].plant({"itemnum": item, "location": "CENTRAL",
                                            "siteid": "BEDFORD", "curbal": balance,
                                            "issueunit": "EACH", "itemsetid": "SET1"})
