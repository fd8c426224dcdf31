"""The SAP PM simulator behaves like API_MAINTNOTIFICATION: auth, CSRF, validation, OData."""

from __future__ import annotations

import aiohttp
import pytest

from simulators.sap_pm import SERVICE_PATH, SapPmSimulator
from tests.simulators.sap_pm.conftest import AUTH, Client, FakeClock, payload

# --- auth and sap-client -----------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("PB_COMM", "wrong"), ("OTHER", "secret")])
async def test_logon_needs_the_communication_user(sim: SapPmSimulator,
                                                  auth: tuple[str, str] | None) -> None:
    headers = {} if auth is None else {"Authorization": aiohttp.encode_basic_auth(*auth)}
    async with aiohttp.ClientSession(headers=headers) as http, \
            http.get(sim.url + SERVICE_PATH + "/MaintenanceNotification") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith('Basic realm="SAP NetWeaver')


async def test_other_sap_client_is_refused(client: Client) -> None:
    status, _, text = await client.call("GET", "/MaintenanceNotification",
                                        params={"sap-client": "200"})
    assert status == 401
    assert "client 200" in text


# --- CSRF ----------------------------------------------------------------------------------


async def test_fetch_issues_a_token_bound_to_a_session_cookie(sim: SapPmSimulator,
                                                              http: aiohttp.ClientSession) -> None:
    async with http.get(sim.url + SERVICE_PATH, headers={"X-CSRF-Token": "Fetch"}) as resp:
        assert resp.status == 200
        token = resp.headers["x-csrf-token"]
        assert len(token) >= 20
        assert "SAP_SESSIONID_S4H_100" in resp.cookies
    # Fetching again in the same session gives the same token; HEAD works too.
    c = Client(sim, http)
    assert await c.fetch("HEAD") == token
    assert len(sim.sessions) == 1


async def test_write_without_token_gets_403_required(sim: SapPmSimulator,
                                                     http: aiohttp.ClientSession) -> None:
    c = Client(sim, http)
    status, headers, text = await c.call("POST", "/MaintenanceNotification", payload())
    assert status == 403
    assert headers["x-csrf-token"] == "Required"
    assert headers["Content-Type"].startswith("text/plain")
    assert text == "CSRF token validation failed"
    assert sim.notifications == []


async def test_token_without_its_cookie_or_a_wrong_token_is_refused(
        sim: SapPmSimulator, client: Client) -> None:
    assert client.token is not None
    async with aiohttp.ClientSession(headers=AUTH) as bare:
        no_cookie = Client(sim, bare)
        no_cookie.token = client.token
        status, _, _ = await no_cookie.call("POST", "/MaintenanceNotification", payload())
        assert status == 403
    client.token = client.token[::-1]
    status, headers, _ = await client.call("POST", "/MaintenanceNotification", payload())
    assert (status, headers["x-csrf-token"]) == (403, "Required")
    assert sim.notifications == []


async def test_session_ends_after_ttl_without_use(sim: SapPmSimulator, client: Client,
                                                  clock: FakeClock) -> None:
    await client.create()
    clock.now += 59  # used within the TTL: still alive, and the use extends it
    await client.create(MaintNotifExtReferenceNumber="PB2")
    clock.now += 61
    status, headers, _ = await client.call("POST", "/MaintenanceNotification", payload())
    assert (status, headers["x-csrf-token"]) == (403, "Required")
    await client.fetch()  # a new session and token
    await client.create(MaintNotifExtReferenceNumber="PB3")
    assert len(sim.notifications) == 3


# --- create and validation ---------------------------------------------------------------


async def test_create_answers_201_with_location_and_the_internal_equipment_form(
        sim: SapPmSimulator, client: Client) -> None:
    status, headers, doc = await client.call("POST", "/MaintenanceNotification", payload())
    assert status == 201
    d = doc["d"]
    assert d["MaintenanceNotification"] == "10000020"
    assert d["MaintNotifInternalID"] == "QM000010000020"
    assert d["TechnicalObject"] == "000000000210100094"
    assert d["TechnicalObjectLabel"] == "210100094"
    assert d["NotifProcessingPhase"] == "1"
    assert d["ReportedByUser"] == "PB_COMM"
    assert d["MaintNotifExtReferenceNumber"] == "PBABCDEFGHIJKLMNOPQR"
    assert d["__metadata"]["type"] == "API_MAINTNOTIFICATION.MaintenanceNotificationType"
    assert headers["Location"] == d["__metadata"]["uri"]
    assert headers["Location"].endswith("/MaintenanceNotification('10000020')")
    assert headers["ETag"] == d["__metadata"]["etag"]


async def test_functional_location_is_not_padded(client: Client) -> None:
    d = await client.create(TechnicalObject="1010-CWS-WCS-CWCP1",
                            TechObjIsEquipOrFuncnlLoc="EAMS_FL")
    assert d["TechnicalObject"] == d["FunctionalLocation"] == "1010-CWS-WCS-CWCP1"
    assert d["Equipment"] == ""


@pytest.mark.parametrize(("over", "prop", "said"), [
    ({"NotificationText": None}, "NotificationText", "short text"),
    ({"NotificationText": "x" * 41}, "NotificationText", "at most 40"),
    ({"MaintNotifExtReferenceNumber": "x" * 21}, "MaintNotifExtReferenceNumber", "at most 20"),
    ({"NotificationType": "M9"}, "NotificationType", "M9 is not defined"),
    ({"MaintPriority": "9"}, "MaintPriority", "Priority 9"),
    ({"TechnicalObject": "999"}, "TechnicalObject", "Equipment 999 does not exist"),
    ({"TechnicalObject": "1010-CWS-WCS-CWCP1"}, "TechnicalObject", "does not exist"),
    ({"TechObjIsEquipOrFuncnlLoc": "EAMS_FL"}, "TechnicalObject",
     "Functional location 210100094 does not exist"),
    ({"MalfunctionStartDate": "2026-11-27"}, "MalfunctionStartDate", "Invalid date"),
    ({"MalfunctionStartTime": "15:51:04"}, "MalfunctionStartTime", "Invalid time"),
    ({"NoSuchField": "x"}, "NoSuchField", "is invalid"),
])
async def test_validation_failures_are_400_with_the_gateway_error_shape(
        sim: SapPmSimulator, client: Client, over: dict[str, object], prop: str,
        said: str) -> None:
    status, _, doc = await client.call("POST", "/MaintenanceNotification", payload(**over))
    assert status == 400
    err = doc["error"]
    assert said in err["message"]["value"]
    assert err["code"] and err["message"]["lang"] == "en"
    inner = err["innererror"]
    assert inner["application"]["service_id"] == "API_MAINTNOTIFICATION"
    assert inner["transactionid"] and inner["Error_Resolution"]["SAP_Note"]
    assert [d["propertyref"] for d in inner["errordetails"]] == [prop]
    assert sim.notifications == []


async def test_repeated_post_creates_a_duplicate_like_the_real_api(
        sim: SapPmSimulator, client: Client) -> None:
    first = await client.create()
    second = await client.create()
    assert first["MaintenanceNotification"] != second["MaintenanceNotification"]
    assert [n["MaintNotifExtReferenceNumber"] for n in sim.notifications] == \
        ["PBABCDEFGHIJKLMNOPQR"] * 2


# --- reads -------------------------------------------------------------------------------


async def test_filter_select_top_and_inlinecount(client: Client) -> None:
    await client.create(MaintNotifExtReferenceNumber="PB-A", NotificationType="M1")
    await client.create(MaintNotifExtReferenceNumber="PB-B", NotificationType="M2")
    await client.create(MaintNotifExtReferenceNumber="PB-B", NotificationType="M1")
    status, _, doc = await client.call("GET", "/MaintenanceNotification", params={
        "$filter": "MaintNotifExtReferenceNumber eq 'PB-B' and NotificationType eq 'M1'",
        "$select": "MaintenanceNotification,NotifProcessingPhase"})
    assert status == 200
    (only,) = doc["d"]["results"]
    assert set(only) == {"__metadata", "MaintenanceNotification", "NotifProcessingPhase"}
    assert only["MaintenanceNotification"] == "10000022"
    _, _, doc = await client.call("GET", "/MaintenanceNotification", params={
        "$filter": "MaintNotifExtReferenceNumber eq 'PB-A' or NotificationType eq 'M2'",
        "$top": "1", "$skip": "1", "$inlinecount": "allpages"})
    assert doc["d"]["__count"] == "2"
    assert [r["MaintenanceNotification"] for r in doc["d"]["results"]] == ["10000021"]
    _, _, doc = await client.call("GET", "/MaintenanceNotification", params={
        "$filter": "MaintNotifExtReferenceNumber eq 'it''s not there'"})
    assert doc["d"]["results"] == []
    _, _, doc = await client.call("GET", "/MaintenanceNotification", params={
        "$filter": "NotificationCompletionDate eq null"})
    assert len(doc["d"]["results"]) == 3


@pytest.mark.parametrize("params", [
    {"$filter": "Nope eq 'x'"}, {"$filter": "NotificationType gt 'M1'"},
    {"$filter": "NotificationType eq"}, {"$select": "Nope"}, {"$top": "-1"},
])
async def test_bad_query_options_are_400(client: Client, params: dict[str, str]) -> None:
    status, _, doc = await client.call("GET", "/MaintenanceNotification", params=params)
    assert status == 400
    assert doc["error"]["message"]["value"]


async def test_get_by_key_and_404(client: Client) -> None:
    created = await client.create()
    status, headers, doc = await client.call(
        "GET", "/MaintenanceNotification('10000020')", params={"$select": "NotificationText"})
    assert status == 200
    assert doc["d"]["NotificationText"] == created["NotificationText"]
    assert headers["ETag"] == created["__metadata"]["etag"]
    status, _, doc = await client.call("GET", "/MaintenanceNotification('99999999')")
    assert status == 404
    assert "99999999" in doc["error"]["message"]["value"]
    status, _, doc = await client.call("GET", "/NoSuchSet")
    assert status == 404


# --- changes -----------------------------------------------------------------------------


async def test_patch_appends_long_text_and_checks_if_match(sim: SapPmSimulator,
                                                           client: Client) -> None:
    created = await client.create(MaintNotifLongTextForEdit="first")
    key = "/MaintenanceNotification('10000020')"
    status, headers, _ = await client.call("PATCH", key, {
        "MaintNotifLongTextForEdit": "second", "MalfunctionEndTime": "PT10H00M00S"})
    assert status == 204
    stored = sim.notifications[0]
    assert stored["MaintNotificationLongText"] == "first\nsecond"
    assert stored["MalfunctionEndTime"] == "PT10H00M00S"
    assert headers["ETag"] != created["__metadata"]["etag"]
    status, _, doc = await client.call("PATCH", key, {"NotificationText": "x"},
                                       headers={"If-Match": created["__metadata"]["etag"]})
    assert status == 412
    assert "changed" in doc["error"]["message"]["value"]
    status, _, _ = await client.call("PATCH", key, {"NotificationText": "x"},
                                     headers={"If-Match": headers["ETag"]})
    assert status == 204
    sim.require_if_match = True
    status, _, doc = await client.call("PATCH", key, {"NotificationText": "y"})
    assert status == 428
    assert "If-Match" in doc["error"]["message"]["value"]
    assert sim.notifications[0]["NotificationText"] == "x"


async def test_phase_actions_drive_notif_processing_phase(sim: SapPmSimulator,
                                                          client: Client) -> None:
    await client.create()
    param = {"MaintenanceNotification": "'10000020'"}
    status, _, doc = await client.call("POST", "/SetMaintNotifToInProcess", params=param)
    assert (status, doc["d"]["NotifProcessingPhase"]) == (200, "2")
    status, _, doc = await client.call("POST", "/SetMaintNotifToInProcess", params=param)
    assert status == 400
    status, _, doc = await client.call("POST", "/CompleteMaintNotification", params=param)
    assert (status, doc["d"]["NotifProcessingPhase"]) == (200, "4")
    assert doc["d"]["NotificationCompletionDate"].startswith("/Date(")
    status, _, doc = await client.call("POST", "/CompleteMaintNotification", params=param)
    assert status == 400
    assert "already completed" in doc["error"]["message"]["value"]
    status, _, _ = await client.call("PATCH", "/MaintenanceNotification('10000020')",
                                     {"NotificationText": "late"})
    assert status == 400
    status, _, _ = await client.call("POST", "/CompleteMaintNotification",
                                     params={"MaintenanceNotification": "'1'"})
    assert status == 404
    status, _, _ = await client.call("POST", "/CompleteMaintNotification")
    assert status == 400
    # Actions are writes: they need the token too.
    client.token = None
    status, _, _ = await client.call("POST", "/SetMaintNotifToInProcess", params=param)
    assert status == 403
