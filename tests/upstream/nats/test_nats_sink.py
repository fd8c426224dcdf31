"""The nats upstream against a real JetStream: ids, duplicates, lost PubAcks, wrong subjects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from gateway.model import Outcome, TransitionKind
from gateway.upstream.nats import NatsCheckError, NatsSink, subject_for
from gateway.upstream.nats_config import NatsSinkConfig
from tests.harness import free_port, wait_for
from tests.upstream.conftest import record
from tests.upstream.nats.conftest import DAY, STREAM, add_stream
from tests.upstream.nats.natsserver import AckLosingProxy, NatsServer

SinkMaker = Callable[..., NatsSink]


@pytest.fixture
async def make_sink(nats_server: NatsServer) -> AsyncIterator[SinkMaker]:
    made: list[NatsSink] = []

    def make(**over: Any) -> NatsSink:
        raw: dict[str, Any] = {"type": "nats", "name": "backbone", "servers": [nats_server.url],
                               "stream": STREAM, "site": "site-a", "area": "line 1",
                               "heartbeat_seconds": 0, "request_timeout_seconds": 2,
                               "connect_timeout_seconds": 1} | over
        sink = NatsSinkConfig.model_validate(raw).build()
        made.append(sink)
        return sink

    yield make
    for s in made:
        await s.aclose()


async def stored(nc: NatsClient, stream: str = STREAM) -> int:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages)


async def test_publish_settles_with_the_stream_sequence_and_carries_the_record(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc)
    sink = make_sink()
    rec = record(asset="pump 1.a")
    [d] = await sink.send([rec])
    assert d.outcome is Outcome.ACCEPTED, d.reason
    assert d.receipt == f"{STREAM}:1"
    msg = await nc.jetstream().get_msg(STREAM, 1)
    # tokens are sanitised: dots and spaces would split or break the subject
    assert msg.subject == "plantbridge.site-a.line_1.pump_1_a.raised"
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == f"site-a:{rec.message.key}"
    assert msg.headers["PB-Episode"] == rec.message.episode_id
    assert orjson.loads(msg.data or b"{}") == dict(rec.message.body)


async def test_the_same_id_twice_is_stored_once_and_both_settle(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc)
    sink = make_sink()
    rec = record()
    [first] = await sink.send([rec])
    [again] = await sink.send([rec])
    assert (first.outcome, again.outcome) == (Outcome.ACCEPTED, Outcome.ACCEPTED)
    assert again.receipt == first.receipt  # the PubAck of a duplicate names the stored one
    assert sink.stats.duplicates == 1
    assert await stored(nc) == 1


async def test_a_lost_puback_is_retried_under_the_same_id_and_settles_once(
        nc: NatsClient, nats_server: NatsServer, make_sink: SinkMaker) -> None:
    await add_stream(nc)
    proxy = AckLosingProxy(nats_server.port)
    await proxy.start()
    try:
        sink = make_sink(servers=[f"nats://127.0.0.1:{proxy.port}"], reconnect_wait_seconds=0.1)
        rec = record(episode="ep-lost")
        proxy.lose_ack_of(subject_for(NatsSinkConfig.model_validate(
            {"type": "nats", "name": "x", "stream": STREAM, "site": "site-a",
             "area": "line 1"}), rec))
        [lost] = await sink.send([rec])
        assert proxy.cuts == 1
        assert lost.outcome is Outcome.RETRY, lost.reason
        assert await stored(nc) == 1  # the server had stored it before the cut
        retried: list[Outcome] = []

        async def settles() -> bool:
            [d] = await sink.send([rec])
            retried.append(d.outcome)
            return d.outcome is Outcome.ACCEPTED

        await wait_for(settles, 15, "the retry to settle", interval=0.2)
        assert sink.stats.duplicates == 1, retried
        assert await stored(nc) == 1
    finally:
        await proxy.stop()


async def test_a_subject_no_stream_captures_is_rejected_in_plain_words(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc, subjects=["plantbridge.other.>"])
    [d] = await make_sink().send([record()])
    assert d.outcome is Outcome.REJECTED
    assert "no stream captures subject plantbridge.site-a.line_1.pump-1.raised" in d.reason


async def test_a_subject_of_another_stream_is_rejected(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc)
    await add_stream(nc, name="AUDIT", subjects=["audit.>"])
    [d] = await make_sink(stream="AUDIT").send([record()])
    assert d.outcome is Outcome.REJECTED
    assert "another stream than 'AUDIT'" in d.reason
    assert await stored(nc) == 0


async def test_an_unreachable_server_is_a_retry(make_sink: SinkMaker) -> None:
    sink = make_sink(servers=[f"nats://127.0.0.1:{free_port()}"])
    [d] = await asyncio.wait_for(sink.send([record()]), 20)
    assert d.outcome is Outcome.RETRY
    assert "cannot connect" in d.reason


async def test_a_clear_is_not_sent_before_its_raise_settles(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc, subjects=["plantbridge.*.*.*.raised"])  # clears have no stream
    sink = make_sink()
    raise_, clear = record(episode="ep-o"), record(TransitionKind.CLEARED, episode="ep-o")
    got = await sink.send([raise_, clear])
    assert [d.outcome for d in got] == [Outcome.ACCEPTED, Outcome.REJECTED]
    assert "no stream captures" in got[1].reason


async def test_check_says_when_the_duplicate_window_is_shorter_than_the_outage(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc, duplicate_window=120)
    sink = make_sink(outage_tolerance_seconds=7 * DAY)
    with pytest.raises(NatsCheckError) as err:
        await sink.check()
    text = str(err.value)
    assert "keeps message ids for 120 s (duplicate_window)" in text
    assert "outage_tolerance_seconds = 7 d" in text
    report = await sink.inspect()
    assert report.duplicate_window_seconds == 120
    assert report.server_version  # what `check --online` prints


async def test_check_passes_a_long_enough_window_and_warns_about_old_servers(
        nc: NatsClient, make_sink: SinkMaker) -> None:
    await add_stream(nc, duplicate_window=2 * DAY)
    sink = make_sink(outage_tolerance_seconds=DAY)
    await sink.check()
    report = await sink.inspect()
    assert not report.problems
    major, minor = (int(x) for x in report.server_version.split(".")[:2])
    if (major, minor) < (2, 11):  # Debian ships 2.9: both warnings apply
        assert any("2.11" in w for w in report.warnings)


async def test_check_names_a_missing_stream(nc: NatsClient, make_sink: SinkMaker) -> None:
    with pytest.raises(NatsCheckError, match="stream 'EVENTS' does not exist"):
        await make_sink().check()


async def test_heartbeat_names_the_gateway(nc: NatsClient, make_sink: SinkMaker) -> None:
    sub = await nc.subscribe("plantbridge.*.gateway.*.heartbeat")
    make_sink(heartbeat_seconds=0.2, gateway_id="edge 7")
    msg = await sub.next_msg(timeout=10)
    assert msg.subject == "plantbridge.site-a.gateway.edge_7.heartbeat"
    doc = orjson.loads(msg.data)
    assert doc["gateway_id"] == "edge_7" and doc["published"] == 0



async def test_check_online_reports_the_server_version_it_finds(
        nc: NatsClient, nats_server: NatsServer, tmp_path: Any) -> None:
    """`plantbridge check --online` names the nats-server version and what it means."""
    import subprocess
    import sys

    await add_stream(nc, duplicate_window=8 * DAY)
    (tmp_path / "rules.toml").write_text("")
    cfg = tmp_path / "plantbridge.toml"
    cfg.write_text(f"""
[gateway]
site = "site-a"
state_dir = "{tmp_path / 'state'}"
[rules]
files = ["rules.toml"]
[[upstreams]]
type = "nats"
name = "backbone"
servers = ["{nats_server.url}"]
stream = "{STREAM}"
heartbeat_seconds = 0
""")
    run = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "gateway.cli", "check", "--online", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60)
    said = run.stdout + run.stderr
    assert run.returncode == 0, said
    v = nc.connected_server_version
    version = f"{v.major}.{v.minor}.{v.patch}"
    assert f"upstream backbone: nats-server {version}, duplicate_window" in said, said
    if tuple(int(x) for x in version.split(".")[:2]) < (2, 11):
        assert "production needs 2.11+" in said, said
