"""One time base against a real asyncua server whose device clock is off."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, cast

from asyncua import ua
from asyncua.server.server import Server

from gateway.model import SourceState
from gateway.timebase import gateway_now
from tests.drivers.opcua.support import plant_config, running
from tests.harness import free_port, wait_for

URI = "urn:plantbridge:test:clock"


@contextlib.asynccontextmanager
async def plc_server() -> AsyncIterator[tuple[str, Any]]:
    """A server with one variable whose values we write with our own SourceTimestamps."""
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/clock/"
    server.set_endpoint(endpoint)
    ns = await server.register_namespace(URI)
    var = await server.nodes.objects.add_variable(ua.NodeId(ua.String("temp"), ua.Int16(ns)),
                                                  ua.QualifiedName("temp", ns), 0.0)
    await server.start()
    try:
        yield endpoint, var
    finally:
        await server.stop()


async def write(var: Any, value: float, source_ts: dt.datetime) -> None:
    await var.write_value(ua.DataValue(ua.Variant(value),
                                       SourceTimestamp=cast(ua.DateTime, source_ts)))


def config(endpoint: str, **overrides: Any) -> Any:
    return plant_config(endpoint, nodes=[{"asset": "line3-plc", "signal": "temperature",
                                          "node_id": f"nsu={URI};s=temp"}], **overrides)


async def test_source_timestamps_five_hours_behind_are_evidence_not_rule_time() -> None:
    async with plc_server() as (endpoint, var), \
            running(config(endpoint, timestamps="device")) as (source, got):
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10, "connected")
        started = gateway_now()
        behind = dt.timedelta(hours=5)
        for i in range(1, 6):
            await write(var, 20.0 + i, dt.datetime.now(dt.UTC) - behind)
            await wait_for(lambda i=i: any(s.value == 20.0 + i  # type: ignore[misc]
                                           for s in got.samples), 10, f"value {i}")
        fresh = [s for s in got.samples if s.value is not None and s.value > 20]
        assert all(started - 1 <= s.source_ts <= gateway_now() + 1 for s in fresh)
        assert all(s.device_ts is not None and abs(s.source_ts - 5 * 3600 - s.device_ts) < 5
                   for s in fresh)
        health = source.health()
    assert health.clock_note.startswith("clock is 5 h 0 min behind"), health.clock_note
    assert health.counted.get("clock_skew", 0) >= 5


async def test_source_timestamps_in_step_are_what_rules_see_when_trusted() -> None:
    async with plc_server() as (endpoint, var), \
            running(config(endpoint, timestamps="device")) as (source, got):
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 10, "connected")
        stamped = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
        await write(var, 42.0, stamped)
        await wait_for(lambda: any(s.value == 42.0 for s in got.samples), 10, "the value")
        (s,) = [s for s in got.samples if s.value == 42.0]
        assert s.source_ts == s.device_ts == stamped.timestamp()
        assert source.health().clock_note == ""
