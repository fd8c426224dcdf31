"""Fixtures for the relay suite: a nats-server with the hub stream, the CMMS simulator, a fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.upstream.nats import NatsSink
from gateway.upstream.nats_config import NatsSinkConfig
from simulators.cmms import CmmsSimulator
from tests.relay.fleetstack import API_KEY, STREAM, Fleet, add_hub_stream
from tests.upstream.nats.conftest import nats_server  # noqa: F401 - the fixture, shared
from tests.upstream.nats.natsserver import NatsServer

SinkMaker = Callable[..., NatsSink]


@pytest.fixture
async def sim() -> AsyncIterator[CmmsSimulator]:
    s = CmmsSimulator(host="127.0.0.1", port=0, api_key=API_KEY)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def fleet(tmp_path: Path, nats_server: NatsServer,
                sim: CmmsSimulator) -> AsyncIterator[Fleet]:
    await add_hub_stream(nats_server.url)
    f = Fleet(tmp_path, [nats_server.url], sim)
    try:
        yield f
    finally:
        f.stop_all()


@pytest.fixture
async def gateway_sink(fleet: Fleet) -> AsyncIterator[SinkMaker]:
    """The gateway side: the real nats upstream publishing into the hub stream."""
    made: list[NatsSink] = []

    def make(**over: Any) -> NatsSink:
        raw: dict[str, Any] = {"type": "nats", "name": "backbone", "servers": fleet.servers,
                               "stream": STREAM, "site": "site-a", "heartbeat_seconds": 0,
                               "request_timeout_seconds": 3} | over
        sink = NatsSinkConfig.model_validate(raw).build()
        made.append(sink)
        return sink

    yield make
    for s in made:
        await s.aclose()
