"""SapPmSinkConfig: the example loads and builds; mistakes are refused; the payload mapping."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.messages import canonical_body
from gateway.upstream.sap_odata import Answer, error_text, odata_string, query_string
from gateway.upstream.sap_pm import SapPmSinkConfig
from gateway.upstream.sap_pm_texts import MAX_LONG_TEXT, long_text
from tests.upstream.sap_pm.conftest import sink_config, transition

EXAMPLE = Path(__file__).parents[3] / "config" / "examples" / "upstream-sap-pm.toml"


async def test_the_example_loads_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTBRIDGE_SAP_PASSWORD", "s3cret")
    raw = tomllib.loads(EXAMPLE.read_text())
    (upstream,) = raw["upstreams"]
    cfg = SapPmSinkConfig.model_validate(upstream)
    assert cfg.asset_map["pump-1"].technical_object == "210100094"
    assert cfg.priority_map == {1: "1", 2: "2", 3: "3", 4: "4"}
    assert cfg.service_url.endswith("/sap/opu/odata/sap/API_MAINTNOTIFICATION")
    sink = cfg.build()
    try:
        assert sink.name == "sap-pm"
    finally:
        await sink.aclose()


def test_a_missing_password_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANTBRIDGE_SAP_PASSWORD", raising=False)
    cfg = sink_config("http://127.0.0.1:1",
                      auth={"user": "U", "password": {"env": "PLANTBRIDGE_SAP_PASSWORD"}})
    with pytest.raises(ValueError, match="PLANTBRIDGE_SAP_PASSWORD is not set"):
        cfg.build()


@pytest.mark.parametrize(("over", "said"), [
    ({"colour": "red"}, "Extra inputs"),
    ({"sap_client": "10"}, "sap_client"),
    ({"base_url": "https://host/sap/opu"}, "base_url"),
    ({"service_path": "sap/opu/odata/sap/X"}, "service_path"),
    ({"priority_map": {"1": "1", "2": "2", "3": "3"}}, "lacks canonical priorities [4]"),
    ({"priority_map": {"1": "1", "2": "2", "3": "3", "4": "44"}}, "1 char"),
    ({"malfunction_timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"connect_timeout_seconds": 9.0, "total_timeout_seconds": 5.0}, "larger than"),
    ({"on_clear": "close"}, "on_clear"),
    ({"asset_map": {"p": {"technical_object": "1", "object_type": "EQUI"}}}, "object_type"),
    ({"asset_map": {"p": {"technical_object": "1", "planning_plant": "10100"}}},
     "planning_plant"),
])
def test_mistakes_are_refused(over: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(said)):
        sink_config(**({"base_url": "http://127.0.0.1:1"} | over))


async def test_malfunction_start_is_plant_local_wall_clock() -> None:
    sink = sink_config("http://127.0.0.1:1", malfunction_timezone="Asia/Tokyo").build()
    try:
        ts = datetime(2026, 11, 27, 20, 30, 5, tzinfo=UTC).timestamp()  # 05:30:05 next day
        payload = sink.notification(canonical_body(transition(ts=ts), "site-a"))
        assert isinstance(payload, dict)
        day = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
        assert payload["MalfunctionStartDate"] == f"/Date({int(day) * 1000})/"
        assert payload["MalfunctionStartTime"] == "PT05H30M05S"
        assert "MainWorkCenterPlant" in payload
    finally:
        await sink.aclose()


async def test_payload_refuses_a_priority_outside_the_map() -> None:
    sink = sink_config("http://127.0.0.1:1").build()
    try:
        body = canonical_body(transition(), "site-a") | {"priority": 7}
        assert sink.notification(body) == \
            "priority 7 is not one of the canonical priorities 1..4"
        body = canonical_body(transition(asset="pump-2"), "site-a")
        payload = sink.notification(body)
        assert isinstance(payload, dict)
        assert "MainWorkCenter" not in payload  # empty routing fields are left out
    finally:
        await sink.aclose()


def test_long_text_keeps_the_evidence_within_1333() -> None:
    body = canonical_body(transition(long_text="x" * 5000), "site-a")
    text = long_text(body)
    assert len(text) == MAX_LONG_TEXT
    assert text.endswith(f"ref {body['dedup_key']}")
    assert "Reason: vibration 7.4 above 7.1 for 5 s" in text


def test_odata_wire_helpers() -> None:
    assert odata_string("it's") == "'it''s'"
    assert query_string({"$filter": "A eq 'x y'", "sap-client": "100"}) == \
        "$filter=A%20eq%20'x%20y'&sap-client=100"
    sap = Answer(400, b'{"error":{"code":"IS/003","message":{"lang":"en","value":"Equipment 9 '
                 b'does not exist"},"innererror":{"errordetails":[{"message":"Equipment 9 does'
                 b' not exist"},{"message":"Check input"}]}}}', "application/json")
    assert error_text(sap) == "Equipment 9 does not exist; Check input [IS/003]"
    plain = Answer(503, b"<html><body>Service   Unavailable</body></html>", "text/html")
    assert error_text(plain) == "<html><body>Service Unavailable</body></html>"


def test_status_poll_seconds_is_a_field_of_the_model() -> None:
    assert sink_config("http://127.0.0.1:1").status_poll_seconds == 300.0
    assert sink_config("http://127.0.0.1:1", status_poll_seconds=0).status_poll_seconds == 0
    with pytest.raises(ValidationError, match="status_poll_seconds"):
        sink_config("http://127.0.0.1:1", status_poll_seconds=-1)
