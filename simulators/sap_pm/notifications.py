"""Maintenance notifications of the SAP simulator: validation, numbering and the phase actions.

Free of HTTP: the server turns `ODataError` into answers. Like the real API there is no dedup:
the same payload POSTed twice makes two notifications.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simulators.sap_pm.odata import (
    DATE_RE,
    TIME_RE,
    Entity,
    ODataError,
    detail,
    odata_date,
    odata_datetime_offset,
    odata_time,
)

ENTITY_TYPE = "API_MAINTNOTIFICATION.MaintenanceNotificationType"
EQUIPMENT = "EAMS_EQUI"
FUNCTIONAL_LOCATION = "EAMS_FL"
NOTIFICATION_TYPES = frozenset({"M1", "M2", "M3"})
FIRST_NUMBER = 10000020  # the number of SAP's own response sample
# NotifProcessingPhase: "1" Outstanding is in a vendor sample; "2" in process and "4" completed
# follow the standard phase domain as generally known [U].
PHASE_OUTSTANDING, PHASE_IN_PROCESS, PHASE_COMPLETED = "1", "2", "4"
PHASE_TEXT = {"1": "Outstanding", "2": "Postponed/In process", "4": "Completed"}
STATUS_TEXT = {"1": "OSNO", "2": "NOPR", "4": "NOCO"}

# Writable properties (create and update schemas): max length, or a format.
TEXT_FIELDS: dict[str, int] = {
    "NotificationText": 40, "NotificationType": 2, "TechnicalObject": 40,
    "TechObjIsEquipOrFuncnlLoc": 20, "MaintPriority": 1, "MaintenancePlanningPlant": 4,
    "MaintenancePlannerGroup": 3, "MainWorkCenter": 8, "MainWorkCenterPlant": 4,
    "MaintNotifLongTextForEdit": 1333, "MaintNotifDetectionCodeGroup": 8,
    "MaintNotifDetectionCode": 4, "MaintNotificationCodeGroup": 8, "MaintNotificationCode": 4,
    "MaintNotifExtReferenceNumber": 20, "ReportedByUser": 12,
}
DATE_FIELDS = frozenset({"MalfunctionStartDate", "MalfunctionEndDate"})
TIME_FIELDS = frozenset({"MalfunctionStartTime", "MalfunctionEndTime"})
BOOL_FIELDS = frozenset({"MaintenanceObjectIsDown"})
WRITABLE = frozenset(TEXT_FIELDS) | DATE_FIELDS | TIME_FIELDS | BOOL_FIELDS
READ_ONLY = frozenset({
    "MaintenanceNotification", "MaintNotifInternalID", "NotifProcessingPhase",
    "NotifProcessingPhaseDesc", "NotificationCompletionDate", "CompletionTime",
    "ConcatenatedActiveSystStsName", "MaintNotificationLongText", "TechnicalObjectLabel",
    "Equipment", "FunctionalLocation", "CreationDate", "CreationTime", "LastChangeDateTime",
    "MaintenanceOrder", "NotificationTimeZone",
})
PROPERTIES = WRITABLE | READ_ONLY
MSG_CLASS = "IWO_BAPI2"  # [U] the message class the PM BAPIs report through


def internal_equipment(external: str) -> str:
    """SAP's ALPHA conversion: numeric equipment numbers are zero-padded to 18 characters."""
    return external.zfill(18) if external.isdigit() else external


def external_equipment(internal: str) -> str:
    return (internal.lstrip("0") or "0") if internal.isdigit() else internal


@dataclass
class Notification:
    """One stored notification: its properties and a change counter for the ETag."""

    data: Entity
    version: int = 1

    @property
    def number(self) -> str:
        return str(self.data["MaintenanceNotification"])

    @property
    def etag(self) -> str:
        stamp = self.data["LastChangeDateTime"]
        return f"W/\"datetime'{stamp}',{self.version}\""


class NotificationStore:
    """The `MaintenanceNotification` entity set of one SAP client."""

    def __init__(self, technical_objects: Mapping[str, str], priorities: Iterable[str]) -> None:
        # internal form -> EAMS_EQUI | EAMS_FL
        self.objects = {internal_equipment(k) if v == EQUIPMENT else k: v
                        for k, v in technical_objects.items()}
        self.priorities = frozenset(priorities)
        self.items: list[Notification] = []

    def find(self, number: str) -> Notification | None:
        return next((n for n in self.items if n.number == number), None)

    def get(self, number: str) -> Notification:
        found = self.find(number)
        if found is None:
            raise ODataError(404, "/IWBEP/CM_MGW_RT/020",
                             f"Resource not found for segment 'MaintenanceNotification' "
                             f"(notification {number} does not exist)")
        return found

    # --- validation ------------------------------------------------------------------------

    def _check(self, data: Mapping[str, Any], creating: bool) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = []
        for name, value in data.items():
            if name == "__metadata" or name in READ_ONLY:
                continue  # read-only properties are ignored, as the gateway does
            if name not in WRITABLE:
                errors.append(detail("/IWBEP/CM_MGW_RT/020",
                                     f"Property '{name}' is invalid", name))
            elif name in TEXT_FIELDS and not (isinstance(value, str)
                                              and len(value) <= TEXT_FIELDS[name]):
                errors.append(detail(f"{MSG_CLASS}/001", f"Value of '{name}' must be a string "
                                     f"of at most {TEXT_FIELDS[name]} characters", name))
            elif name in DATE_FIELDS and not (value is None or (isinstance(value, str)
                                                                 and DATE_RE.match(value))):
                errors.append(detail("/IWBEP/CM_MGW_RT/002",
                                     f"Invalid date '{value}' for '{name}'", name))
            elif name in TIME_FIELDS and not (isinstance(value, str) and TIME_RE.match(value)):
                errors.append(detail("/IWBEP/CM_MGW_RT/002",
                                     f"Invalid time '{value}' for '{name}'", name))
            elif name in BOOL_FIELDS and not isinstance(value, bool):
                errors.append(detail("/IWBEP/CM_MGW_RT/002", f"'{name}' must be a boolean", name))
        if errors:
            return errors
        text = data.get("NotificationText")
        if creating and not (isinstance(text, str) and text.strip()):
            errors.append(detail(f"{MSG_CLASS}/002", "Enter a short text for the notification",
                                 "NotificationText"))
        ntype = data.get("NotificationType")
        if ntype is not None and ntype not in NOTIFICATION_TYPES:
            errors.append(detail("IM/123", f"Notification type {ntype} is not defined",
                                 "NotificationType"))
        prio = data.get("MaintPriority")
        if prio not in (None, "") and prio not in self.priorities:
            errors.append(detail("IW/059", f"Priority {prio} is not defined for this priority "
                                 "type", "MaintPriority"))
        errors.extend(self._check_object(data))
        return errors

    def _check_object(self, data: Mapping[str, Any]) -> list[dict[str, str]]:
        obj = data.get("TechnicalObject")
        if obj in (None, ""):
            return []
        kind = data.get("TechObjIsEquipOrFuncnlLoc")
        if kind not in (EQUIPMENT, FUNCTIONAL_LOCATION):
            return [detail(f"{MSG_CLASS}/010", "TechObjIsEquipOrFuncnlLoc must be EAMS_EQUI or "
                           "EAMS_FL", "TechObjIsEquipOrFuncnlLoc")]
        key = internal_equipment(str(obj)) if kind == EQUIPMENT else str(obj)
        if self.objects.get(key) != kind:
            what = "Equipment" if kind == EQUIPMENT else "Functional location"
            return [detail("IS/003" if kind == EQUIPMENT else "IL/002",
                           f"{what} {obj} does not exist", "TechnicalObject")]
        return []

    # --- changes -----------------------------------------------------------------------------

    def create(self, data: Mapping[str, Any], user: str) -> Notification:
        errors = self._check(data, creating=True)
        if errors:
            raise ODataError(400, errors[0]["code"], errors[0]["message"], errors)
        now = datetime.now(UTC)
        number = str(FIRST_NUMBER + len(self.items))
        entity: Entity = {
            "MaintenanceNotification": number,
            "MaintNotifInternalID": "QM" + number.zfill(12),
            "NotificationText": "", "NotificationType": "M1", "MaintPriority": "",
            "NotifProcessingPhase": PHASE_OUTSTANDING,
            "NotifProcessingPhaseDesc": PHASE_TEXT[PHASE_OUTSTANDING],
            "ConcatenatedActiveSystStsName": STATUS_TEXT[PHASE_OUTSTANDING],
            "CreationDate": odata_date(now), "CreationTime": odata_time(now),
            "LastChangeDateTime": odata_datetime_offset(now), "NotificationTimeZone": "UTC",
            "ReportedByUser": user[:12], "TechnicalObject": "", "TechObjIsEquipOrFuncnlLoc": "",
            "TechnicalObjectLabel": "", "Equipment": "", "FunctionalLocation": "",
            "MaintenancePlanningPlant": "", "MaintenancePlannerGroup": "", "MainWorkCenter": "",
            "MainWorkCenterPlant": "", "MalfunctionStartDate": None,
            "MalfunctionStartTime": "PT00H00M00S", "MalfunctionEndDate": None,
            "MalfunctionEndTime": "PT00H00M00S", "MaintenanceObjectIsDown": False,
            "MaintNotifLongTextForEdit": "", "MaintNotificationLongText": "",
            "MaintNotifDetectionCodeGroup": "", "MaintNotifDetectionCode": "",
            "MaintNotificationCodeGroup": "", "MaintNotificationCode": "",
            "MaintNotifExtReferenceNumber": "", "NotificationCompletionDate": None,
            "CompletionTime": "PT00H00M00S", "MaintenanceOrder": "",
        }
        item = Notification(entity)
        self._apply(item, {k: v for k, v in data.items() if k in WRITABLE})
        item.version = 1
        self.items.append(item)
        return item

    def update(self, item: Notification, data: Mapping[str, Any]) -> None:
        if item.data["NotifProcessingPhase"] == PHASE_COMPLETED:
            raise ODataError(400, "IM/152", f"Notification {item.number} is completed; "
                             "changes are not possible")  # [U] message text
        merged = {k: item.data[k] for k in ("TechnicalObject", "TechObjIsEquipOrFuncnlLoc")}
        errors = self._check(data, creating=False)
        if not errors and "TechnicalObject" in data:
            errors = self._check_object(merged | dict(data))
        if errors:
            raise ODataError(400, errors[0]["code"], errors[0]["message"], errors)
        self._apply(item, {k: v for k, v in data.items() if k in WRITABLE})

    def _apply(self, item: Notification, data: Mapping[str, Any]) -> None:
        e = item.data
        for name, value in data.items():
            if name == "MaintNotifLongTextForEdit":
                # [U] a write adds a paragraph to the long text; ForEdit holds the last one.
                e["MaintNotificationLongText"] = "\n".join(
                    t for t in (e["MaintNotificationLongText"], value) if t)
            e[name] = value
        if "TechnicalObject" in data:
            obj = str(e["TechnicalObject"])
            is_equi = e["TechObjIsEquipOrFuncnlLoc"] == EQUIPMENT
            internal = internal_equipment(obj) if is_equi else obj
            e["TechnicalObject"] = internal
            e["TechnicalObjectLabel"] = external_equipment(internal) if is_equi else internal
            e["Equipment"] = internal if is_equi else ""
            e["FunctionalLocation"] = "" if is_equi else internal
        self._touch(item)

    def _touch(self, item: Notification) -> None:
        item.data["LastChangeDateTime"] = odata_datetime_offset(datetime.now(UTC))
        item.version += 1

    def set_phase(self, item: Notification, phase: str) -> None:
        """CompleteMaintNotification ("4") and SetMaintNotifToInProcess ("2")."""
        current = item.data["NotifProcessingPhase"]
        if current == PHASE_COMPLETED:
            raise ODataError(400, "IM/151", f"Notification {item.number} is already completed")
        if phase == PHASE_IN_PROCESS and current != PHASE_OUTSTANDING:
            raise ODataError(400, "IM/150", f"Notification {item.number} is already in process")
        now = datetime.now(UTC)
        item.data.update(NotifProcessingPhase=phase, NotifProcessingPhaseDesc=PHASE_TEXT[phase],
                         ConcatenatedActiveSystStsName=STATUS_TEXT[phase])
        if phase == PHASE_COMPLETED:
            item.data.update(NotificationCompletionDate=odata_date(now),
                             CompletionTime=odata_time(now))
        self._touch(item)

    def view(self, item: Notification, base_url: str) -> Entity:
        """The entity with its `__metadata` (uri, type, etag)."""
        uri = f"{base_url}/MaintenanceNotification('{item.number}')"
        return {"__metadata": {"id": uri, "uri": uri, "type": ENTITY_TYPE, "etag": item.etag},
                **item.data}
