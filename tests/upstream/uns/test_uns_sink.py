"""The UNS sink against a real Mosquitto: events, retained state, read-back, failures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.model import MessageKind, Outcome, TransitionKind
from gateway.upstream.rest import UpstreamCheckError
from tests.drivers.mqtt.conftest import SecureBroker
from tests.harness import Mosquitto, free_port, self_signed_localhost, wait_for
from tests.upstream.uns.conftest import SinkFactory, SubscriberFactory, uns_record

RAISED, CLEARED = TransitionKind.RAISED, TransitionKind.CLEARED
BASE = "acme/lyon/utilities/water/pump-1"


async def test_raise_and_clear_give_events_and_retained_state(
        make_sink: SinkFactory, subscribe: SubscriberFactory) -> None:
    events = subscribe(["acme/lyon/+/+/+/events/#"])
    sink = make_sink()
    raise_rec = uns_record(RAISED)
    [d] = await sink.send([raise_rec])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert d.receipt is not None and d.receipt.startswith("mqtt:")
    # A subscriber arriving now sees the open condition at once: the state is retained.
    late = subscribe([f"{BASE}/state"], client_id="late-1")
    await wait_for(lambda: len(late.on("/state")) == 1, 5, "retained state")
    [state] = late.on("/state")
    assert state.retain and state.content_type == "application/json"
    doc = state.doc
    assert (doc["asset"], doc["area"], doc["line"], doc["site"]) == (
        "pump-1", "utilities", "water", "lyon")
    [cond] = doc["open"]
    assert cond["episode_id"] == "ep-1" and cond["rule_id"] == "vib-high"
    assert cond["severity"] == 2 and cond["reason"] == "vibration 7.4 above 7.1 for 5 s"
    assert cond["since"] == raise_rec.message.body["raised_at"]
    assert cond["external_ref"] == raise_rec.message.body["dedup_key"]
    assert doc["worst_severity"] == 2 and doc["last_values"]["vibration"]["value"] == 7.4

    clear_rec = uns_record(CLEARED, value=3.0)
    assert clear_rec.message.kind is MessageKind.STATUS_UPDATE
    [d2] = await sink.send([clear_rec])
    assert d2.outcome is Outcome.ACCEPTED, d2.reason
    await wait_for(lambda: len(events.on("/events/cleared")) == 1, 5, "the clear event")
    [raised] = events.on("/events/raised")
    [cleared] = events.on("/events/cleared")
    assert raised.topic == f"{BASE}/events/raised" and not raised.retain
    assert raised.props == {"message-id": raise_rec.message.key, "episode-id": "ep-1"}
    assert cleared.props["message-id"] == clear_rec.message.key
    assert raised.content_type == "application/json"
    assert raised.doc["event"] == "raised" and raised.doc["title"] == "pump-1: vibration high"
    later = subscribe([f"{BASE}/state"], client_id="late-2")
    await wait_for(lambda: len(later.on("/state")) == 1, 5, "retained state after the clear")
    assert later.on("/state")[0].doc["open"] == []
    assert later.on("/state")[0].doc["last_values"]["vibration"]["value"] == 3.0


async def test_state_is_published_once_per_asset_per_batch(
        make_sink: SinkFactory, subscribe: SubscriberFactory) -> None:
    states = subscribe(["acme/lyon/+/+/+/state"])
    sink = make_sink()
    batch = [uns_record(RAISED, "pump-1", f"ep-{i}") for i in range(4)]
    batch += [uns_record(RAISED, "fan-2", "ep-f"), uns_record(CLEARED, "pump-1", "ep-0")]
    got = await sink.send(batch)
    assert [d.outcome for d in got] == [Outcome.ACCEPTED] * 6
    # A later state of another asset marks the end: one connection keeps its order.
    assert (await sink.send([uns_record(RAISED, "zz-9", "ep-z")]))[0].outcome is Outcome.ACCEPTED
    await wait_for(lambda: len(states.on("zz-9/state")) == 1, 5, "the marker state")
    states.seen = [s for s in states.seen if "zz-9" not in s.topic]
    assert sorted(s.topic for s in states.seen) == [
        "acme/lyon/unassigned/unassigned/fan-2/state", f"{BASE}/state"]
    pump = states.on("pump-1/state")[0].doc
    assert sorted(c["episode_id"] for c in pump["open"]) == ["ep-1", "ep-2", "ep-3"]
    # A dashboard connecting now gets every asset's current state at once.
    late = subscribe(["acme/lyon/+/+/+/state"], client_id="late-dashboard")
    await wait_for(lambda: len(late.seen) == 3, 5, "three retained states")
    assert all(s.retain for s in late.seen)
    assert {s.doc["asset"]: s.doc["open_count"] for s in late.seen} == {
        "pump-1": 3, "fan-2": 1, "zz-9": 1}


async def test_a_restarted_gateway_reads_its_state_back(make_sink: SinkFactory,
                                                      subscribe: SubscriberFactory) -> None:
    first = make_sink()
    assert (await first.send([uns_record(RAISED, episode="ep-a")]))[0].outcome is Outcome.ACCEPTED
    await first.aclose()
    second = make_sink()  # a new process: nothing in memory
    [d] = await second.send([uns_record(RAISED, episode="ep-b")])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    late = subscribe([f"{BASE}/state"], client_id="late")
    await wait_for(lambda: len(late.on("/state")) == 1, 5, "retained state")
    assert sorted(c["episode_id"] for c in late.on("/state")[0].doc["open"]) == ["ep-a", "ep-b"]
    # Another gateway's (or a stranger's) retained message under our prefix is not adopted.
    assert set(second.states) == {"pump-1"}


async def test_bad_asset_name_is_rejected_and_the_rest_delivered(make_sink: SinkFactory) -> None:
    sink = make_sink()
    bad = uns_record(RAISED, asset="line/7", episode="ep-x")
    good = uns_record(RAISED, asset="pump-1", episode="ep-y")
    d_bad, d_good = await sink.send([bad, good])
    assert d_bad.outcome is Outcome.REJECTED
    assert "'line/7'" in d_bad.reason and "'/'" in d_bad.reason
    assert d_good.outcome is Outcome.ACCEPTED


async def test_broker_down_is_a_retry_with_plain_words(make_sink: SinkFactory) -> None:
    sink = make_sink(port=free_port(), connect_timeout_seconds=0.5)
    [d] = await sink.send([uns_record()])
    assert d.outcome is Outcome.RETRY
    assert "connection refused by 127.0.0.1:" in d.reason
    with pytest.raises(UpstreamCheckError, match="connection refused"):
        await sink.check()


async def test_check_publishes_and_clears_the_probe(make_sink: SinkFactory,
                                                    subscribe: SubscriberFactory) -> None:
    probe = subscribe(["acme/lyon/_plantbridge/probe"])
    await make_sink().check()
    await wait_for(lambda: len(probe.seen) == 2, 5, "the probe and its removal")
    assert probe.seen[0].doc["probe"] == "plantbridge" and probe.seen[1].payload == b""
    late = subscribe(["acme/lyon/_plantbridge/probe"], client_id="late")
    assert late.seen == []  # cleared: nothing retained is left behind


async def test_state_publish_refused_retries_its_events(
        tmp_path_factory: pytest.TempPathFactory, make_sink: SinkFactory) -> None:
    strict = Mosquitto(free_port(), tmp_path_factory.mktemp("acl"), acl=[
        "topic readwrite acme/lyon/+/+/+/events/#", "topic readwrite acme/lyon/_plantbridge/#",
        "topic read acme/lyon/+/+/+/state"])
    strict.start()
    try:
        sink = make_sink(port=strict.port)
        [d] = await sink.send([uns_record()])
    finally:
        strict.stop()
    assert d.outcome is Outcome.RETRY
    assert "event published, but not the state of pump-1" in d.reason
    assert "Not authorized" in d.reason


async def test_bad_credentials_are_named(tmp_path_factory: pytest.TempPathFactory,
                                         make_sink: SinkFactory) -> None:
    secure = SecureBroker(free_port(), tmp_path_factory.mktemp("secure"))
    secure.start("plantbridge", "right")
    try:
        sink = make_sink(port=secure.port, username="plantbridge",
                         password={"value": "wrong"}, connect_timeout_seconds=1)
        # The broker's own MQTT 5 reason (Mosquitto 2.0 says "Not authorized" for a bad
        # password; others say "Bad user name or password").
        refused = "refused the connection: (Not authorized|Bad user name or password)"
        with pytest.raises(UpstreamCheckError, match=refused):
            await sink.check()
        [d] = await sink.send([uns_record()])
        assert d.outcome is Outcome.RETRY and re.search(refused, d.reason), d.reason
        good = make_sink(port=secure.port, username="plantbridge", password={"value": "right"})
        await good.check()
    finally:
        secure.stop()


async def test_unusable_tls_files_are_a_retry_not_a_crash(tmp_path: Path,
                                                          make_sink: SinkFactory) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    sink = make_sink(tls={"cert_file": str(cert), "key_file": str(key)})
    [d] = await sink.send([uns_record()])
    assert d.outcome is Outcome.RETRY
    assert d.reason.startswith("cannot set up the connection to 127.0.0.1:"), d.reason
    with pytest.raises(UpstreamCheckError, match="cannot set up the connection"):
        await sink.check()


async def test_tls_verifies_the_broker(tmp_path_factory: pytest.TempPathFactory,
                                       make_sink: SinkFactory) -> None:
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_localhost(workdir, "uns-broker")
    secured = Mosquitto(free_port(), workdir,
                        listener_lines=[f"certfile {cert}", f"keyfile {key}"])
    secured.start()
    try:
        trusting = make_sink(port=secured.port, tls={"ca_file": str(cert)})
        await trusting.check()
        [d] = await trusting.send([uns_record()])
        assert d.outcome is Outcome.ACCEPTED, d.reason
        stranger = make_sink(port=secured.port, tls={}, connect_timeout_seconds=1)
        [d2] = await stranger.send([uns_record()])
        assert d2.outcome is Outcome.RETRY and "certificate verify failed" in d2.reason, d2.reason
    finally:
        secured.stop()
