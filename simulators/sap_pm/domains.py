"""The SAP simulator's value helps: notification priorities and catalog codes (read only).

What SAP documents: priorities are customizing per priority type (table T356; SAP's search help
H_T356 has the parameters ARTPR priority type, PRIOK priority, PRIOKX text: SAP/fundamental-tools
[S*]); catalog codes are kept per catalog type, code group and code (QPGR/QPCD). That
API_MAINTNOTIFICATION exposes them as the Gateway value-help entity sets `VL_SH_H_T356` and
`VL_CT_QPCD`, and under these property names, is an assumption [U]: on a real system look at the
service's `$metadata` and set `domains` in the upstream's config to what it offers.

Seeded here from the simulator's own plant, never from an adapter's config. The priorities are
the ones the notification store accepts on create (`priorities` of the simulator).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulators.sap_pm.odata import (
    ODataError,
    non_negative,
    parse_filter,
    parse_select,
)

PRIORITY_SET = "VL_SH_H_T356"
CODE_SET = "VL_CT_QPCD"
PRIORITY_TYPE = "PM"  # [U] the priority type of PM notifications in standard customizing
PRIORITY_FIELDS = ("ARTPR", "PRIOK", "PRIOKX")
CODE_FIELDS = ("KATALOGART", "CODEGRUPPE", "CODE", "KURZTEXT")
PRIORITY_TEXT = {"1": "Very high", "2": "High", "3": "Medium", "4": "Low"}

# The simulated plant's damage catalog (catalog type C): code group, code, text.
SEED_CODES = (
    ("C", "PUMP", "BRG", "Bearing damage"),
    ("C", "PUMP", "SEAL", "Seal leaking"),
    ("C", "PUMP", "CAV", "Cavitation"),
    ("C", "MOTOR", "OVHT", "Overheating"),
    ("C", "MOTOR", "VIB", "Vibration"),
)


class ValueHelps:
    """Answers GET on the two value-help entity sets of the notification service."""

    def __init__(self, priorities: Iterable[str],
                 codes: Iterable[tuple[str, str, str, str]] = SEED_CODES) -> None:
        self.priorities = [{"ARTPR": PRIORITY_TYPE, "PRIOK": p,
                            "PRIOKX": PRIORITY_TEXT.get(p, f"Priority {p}")}
                           for p in sorted(priorities)]
        self.codes = [dict(zip(CODE_FIELDS, c, strict=True)) for c in codes]

    def handles(self, tail: str) -> bool:
        return tail.lstrip("/") in (PRIORITY_SET, CODE_SET)

    def answer(self, tail: str, query: Mapping[str, str], base_url: str) -> dict[str, Any]:
        name = tail.lstrip("/")
        rows, fields = ((self.priorities, PRIORITY_FIELDS) if name == PRIORITY_SET
                        else (self.codes, CODE_FIELDS))
        if "$filter" in query:
            pred = parse_filter(query["$filter"], fields)
            rows = [r for r in rows if pred(r)]
        try:
            select = parse_select(query.get("$select"), fields)
        except ODataError as exc:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022",
                             exc.message.replace("MaintenanceNotificationType", name)) from exc
        skip, top = non_negative(query, "$skip") or 0, non_negative(query, "$top")
        page = rows[skip:] if top is None else rows[skip:skip + top]
        keep = select or list(fields)
        return {"results": [{"__metadata": {"uri": f"{base_url}/{name}", "type": name},
                             **{k: r[k] for k in keep}} for r in page]}
