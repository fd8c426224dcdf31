"""From a stream message to the record the sinks send: what is refused, and the stable key."""

from __future__ import annotations

import orjson
import pytest

from gateway.model import MessageKind
from gateway.relay.events import BadEvent, parse_event, receipt_key, record_for

HEADERS = {"Nats-Msg-Id": "edge-1:request:PBX:backbone", "PB-Key": "request:PBX:backbone",
           "PB-Kind": "maintenance_request", "PB-Asset": "pump 1", "PB-Episode": "ep-1",
           "PB-Gateway": "edge-1", "PB-Created-At": "1790000000.5", "PB-Class": "2",
           "PB-Dedup-Key": "PBX"}
BODY = orjson.dumps({"dedup_key": "PBX", "asset": "pump 1", "title": "t"})


def test_an_event_becomes_the_record_a_sink_sends() -> None:
    ev = parse_event("plantbridge.s.a.pump_1.raised", HEADERS, BODY, seq=7, num_delivered=1)
    rec = record_for(ev, "cmms", None)
    assert rec.id == 7 and rec.message.kind is MessageKind.MAINTENANCE_REQUEST
    assert rec.message.key == "edge-1:request:PBX:backbone>cmms"
    assert rec.unsettled_send_at is None and rec.attempts == 0
    assert ev.lane == "edge-1/pump 1" and ev.intent == "raise" and ev.forwardable


def test_a_redelivery_keeps_the_key_and_asks_for_a_lookup() -> None:
    again = parse_event("s", HEADERS | {"Nats-Msg-Id": "edge-1:request:PBX:backbone#requeue-3"},
                        BODY, seq=9, num_delivered=3)
    rec = record_for(again, "cmms", None)
    assert rec.message.key == "edge-1:request:PBX:backbone>cmms"  # the same upstream key
    assert rec.unsettled_send_at == 1790000000.5 and rec.attempts == 2


def test_receipt_keys_are_valid_kv_keys() -> None:
    ev = parse_event("s", HEADERS | {"PB-Gateway": "edge 1*"}, BODY, seq=1, num_delivered=1)
    assert receipt_key("cmms eu", ev) == "cmms_eu.edge_1_.raise.PBX"
    assert receipt_key("cmms", ev, "clear") == "cmms.edge_1_.clear.PBX"


@pytest.mark.parametrize(("headers", "body", "said"), [
    ({}, BODY, "header(s) Nats-Msg-Id, PB-Key, PB-Kind, PB-Asset, PB-Episode, PB-Gateway"),
    (HEADERS | {"PB-Kind": "party"}, BODY, "unknown event kind 'party'"),
    (HEADERS, b"{not json", "payload is not JSON"),
    (HEADERS, b"[1]", "payload is not a JSON object"),
    (HEADERS | {"PB-Created-At": "soon"}, BODY, "bad header value"),
    ({k: v for k, v in HEADERS.items() if k != "PB-Dedup-Key"}, b"{}", "no dedup key"),
])
def test_what_is_not_an_event_is_refused_in_words(headers: dict[str, str], body: bytes,
                                                  said: str) -> None:
    with pytest.raises(BadEvent, match=said.replace("(", r"\(").replace(")", r"\)")):
        parse_event("s", headers, body, seq=1, num_delivered=1)
