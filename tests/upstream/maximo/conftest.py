"""Fixtures for the Maximo sink suite: the simulator, sinks that get closed, outbox records."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.messages import messages_for
from gateway.model import (
    MessageKind,
    OutboxRecord,
    RequestDetails,
    Transition,
    TransitionKind,
)
from gateway.upstream.maximo import MaximoSink, MaximoSinkConfig
from simulators.maximo import MaximoSimulator

_ids = itertools.count(1)
ASSETS = {"PUMP-1": "BEDFORD", "FAN-1": "BEDFORD", "MIX-9": "NASHUA"}


def transition(kind: TransitionKind = TransitionKind.RAISED, asset: str = "pump-1",
               episode: str = "ep-1", priority: int = 2) -> Transition:
    return Transition(kind=kind, rule_id="vib-high", asset=asset, signal="vibration",
                      episode_id=episode, severity=2, value=7.4, ts=1_790_000_000.0,
                      reason="vibration 7.4 above 7.1 for 5 s",
                      request=RequestDetails(title="{asset}: vibration high", priority=priority,
                                             long_text="Check the bearings of {asset}.",
                                             failure_code="VIB"))


def raise_record(asset: str = "pump-1", episode: str = "ep-1", priority: int = 2
                 ) -> OutboxRecord:
    """A raise as the pipeline builds it (gateway.messages)."""
    msg = messages_for(transition(TransitionKind.RAISED, asset, episode, priority),
                       ["maximo"], "site-a")[0]
    return OutboxRecord(id=next(_ids), message=msg, attempts=0)


def clear_record(upstream_ref: str | None, asset: str = "pump-1",
                 episode: str = "ep-1") -> OutboxRecord:
    msg = messages_for(transition(TransitionKind.CLEARED, asset, episode), ["maximo"],
                       "site-a")[0]
    assert msg.kind is MessageKind.STATUS_UPDATE
    return OutboxRecord(id=next(_ids), message=msg, attempts=0, upstream_ref=upstream_ref)


SinkFactory = Callable[..., MaximoSink]


@pytest.fixture
async def maximo() -> AsyncIterator[MaximoSimulator]:
    s = MaximoSimulator(assets=ASSETS, priority_domain=(1, 2, 3, 4, 5))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    """`make_sink(base_url, **config)`: a MaximoSink with api key "test-key", site BEDFORD,
    pump-1 / fan-1 / mix-9 mapped, short timeouts."""
    made: list[MaximoSink] = []

    def make(base_url: str, **over: Any) -> MaximoSink:
        raw: dict[str, Any] = {
            "type": "maximo", "name": "maximo", "base_url": base_url,
            "auth": {"kind": "api_key", "key": {"value": "test-key"}},
            "siteid": "BEDFORD", "reportedby": "PLANTBRIDGE",
            "asset_map": {"pump-1": {"assetnum": "PUMP-1", "location": "LINE1"},
                          "fan-1": {"assetnum": "FAN-1"},
                          "mix-9": {"assetnum": "MIX-9", "siteid": "NASHUA"}},
            "total_timeout_seconds": 3.0, "connect_timeout_seconds": 1.0,
        }
        sink = MaximoSinkConfig.model_validate(raw | over).build()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.aclose()
