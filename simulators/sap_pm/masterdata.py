"""The SAP simulator's technical objects: API_EQUIPMENT and API_FUNCTIONALLOCATION (read only).

Seeded here, from the simulator's own plant, never from an adapter's config: a look-up that
finds an asset proves the gateway asked the way SAP answers. What the shared doc gives
(UPSTREAM-WORKFLOW-APIS §1, EQUI/FLOC specs [S]): equipment is keyed by `Equipment` +
`ValidityEndDate`, so clients filter (`$filter=Equipment eq '...'`) rather than read by key;
a functional location is read by key `FunctionalLocation('...')`; the fields named below. The
equipment API answering in external (unpadded) form is from latonaio's sandbox samples [T];
the simulator compares filter values literally, with no conversion exit [U].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulators.sap_pm.odata import ODataError, parse_filter, parse_key_literal, parse_select

EQUIPMENT_PATH = "/sap/opu/odata/sap/API_EQUIPMENT"
FLOC_PATH = "/sap/opu/odata/sap/API_FUNCTIONALLOCATION"
END_OF_TIME = "/Date(253402214400000)/"  # 9999-12-31: the current validity period

EQUIPMENT_FIELDS = ("Equipment", "ValidityEndDate", "EquipmentName", "FunctionalLocation",
                    "MaintenancePlant", "EquipmentIsMarkedForDeletion", "EquipmentIsInactive",
                    "EquipmentIsInstalled")
FLOC_FIELDS = ("FunctionalLocation", "FunctionalLocationLabelName", "FunctionalLocationName",
               "SuperiorFunctionalLocation", "MaintenancePlant", "FuncnlLocIsMarkedForDeletion",
               "FuncnlLocIsDeleted", "FunctionalLocationIsActive", "FuncnlLocIsDeactivated")


def equipment(number: str, name: str, floc: str = "", plant: str = "1010", *,
              deleted: bool = False) -> dict[str, Any]:
    return {"Equipment": number, "ValidityEndDate": END_OF_TIME, "EquipmentName": name,
            "FunctionalLocation": floc, "MaintenancePlant": plant,
            "EquipmentIsMarkedForDeletion": deleted, "EquipmentIsInactive": False,
            "EquipmentIsInstalled": bool(floc)}


def functional_location(label: str, name: str, plant: str = "1010", *,
                        deleted: bool = False) -> dict[str, Any]:
    superior = label.rsplit("-", 1)[0] if "-" in label else ""
    return {"FunctionalLocation": label, "FunctionalLocationLabelName": label,
            "FunctionalLocationName": name, "SuperiorFunctionalLocation": superior,
            "MaintenancePlant": plant, "FuncnlLocIsMarkedForDeletion": deleted,
            "FuncnlLocIsDeleted": False, "FunctionalLocationIsActive": not deleted,
            "FuncnlLocIsDeactivated": False}


# The simulated plant 1010: numbers as in SAP's own samples, plus one scrapped pump.
SEED_EQUIPMENT = (
    equipment("210100094", "Cooling water pump 1", "1010-CWS-WCS-CWCP1"),
    equipment("210100095", "Cooling water pump 2", "1010-CWS-WCS-CWCP2"),
    equipment("210100099", "Old feed pump (scrapped)", deleted=True),
)
SEED_FLOCS = (
    functional_location("1010-CWS-WCS-CWCP1", "Cooling water pump station 1"),
    functional_location("1010-CWS-WCS-CWCP2", "Cooling water pump station 2"),
)


class MasterData:
    """Equipment and functional locations, and the two services' GET handling."""

    def __init__(self, equipment_records: Iterable[Mapping[str, Any]] = SEED_EQUIPMENT,
                 floc_records: Iterable[Mapping[str, Any]] = SEED_FLOCS) -> None:
        self.equipment = [dict(e) for e in equipment_records]
        self.flocs = {str(f["FunctionalLocation"]): dict(f) for f in floc_records}

    def answer(self, path: str, tail: str, query: Mapping[str, str], base: str) -> Any:
        """The `d` document of a GET on one of the two services (raises ODataError)."""
        if tail in ("", "/"):
            sets = ["Equipment"] if path == EQUIPMENT_PATH else ["FunctionalLocation"]
            return {"EntitySets": sets}
        if path == EQUIPMENT_PATH and tail == "/Equipment":
            found = self.equipment
            if "$filter" in query:
                pred = parse_filter(query["$filter"], EQUIPMENT_FIELDS)
                found = [e for e in found if pred(e)]
            select = parse_select(query.get("$select"), EQUIPMENT_FIELDS)
            return {"results": [self._view(e, select, f"{base}{EQUIPMENT_PATH}/Equipment("
                                           f"Equipment='{e['Equipment']}',ValidityEndDate="
                                           "datetime'9999-12-31T00:00:00')") for e in found]}
        if path == FLOC_PATH and tail.startswith("/FunctionalLocation(") and tail.endswith(")"):
            literal = tail[len("/FunctionalLocation("):-1]
            key = parse_key_literal(literal.removeprefix("FunctionalLocation="))
            if key is None:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/004", f"Invalid key {literal}")
            record = self.flocs.get(key)
            if record is None:
                raise ODataError(404, "/IWBEP/CM_MGW_RT/020",
                                 f"Resource not found for segment 'FunctionalLocation({literal})'")
            select = parse_select(query.get("$select"), FLOC_FIELDS)
            return self._view(record, select, f"{base}{FLOC_PATH}/FunctionalLocation('{key}')")
        raise ODataError(404, "/IWBEP/CM_MGW_RT/021",
                         f"Resource not found for segment '{tail.lstrip('/')}'")

    @staticmethod
    def _view(record: Mapping[str, Any], select: list[str] | None, uri: str) -> dict[str, Any]:
        keep = select if select is not None else list(record)
        return {"__metadata": {"uri": uri}, **{k: record.get(k) for k in keep}}
