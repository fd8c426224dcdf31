"""Fixtures for the SAP PM sink suite: the SAP simulator, outbox records, sinks that get closed."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from gateway.messages import messages_for
from gateway.model import OutboxRecord, RequestDetails, Transition, TransitionKind
from gateway.upstream.sap_pm import SapPmSink, SapPmSinkConfig
from simulators.sap_pm import SapPmSimulator

_ids = itertools.count(1)
RAISED_AT = 1_790_000_000.0  # 2026-09-21T12:26:40Z
EQUIPMENT = {"210100094": "EAMS_EQUI", "210100095": "EAMS_EQUI",
             "1010-CWS-WCS-CWCP1": "EAMS_FL"}
ASSET_MAP = {
    "pump-1": {"technical_object": "210100094", "planning_plant": "1010",
               "planner_group": "920", "work_center": "RES-0100"},
    "pump-2": {"technical_object": "210100095", "planning_plant": "1010"},
    "line-1": {"technical_object": "1010-CWS-WCS-CWCP1", "object_type": "EAMS_FL"},
    "ghost-1": {"technical_object": "999999"},  # mapped, but SAP does not know it
}


def transition(kind: TransitionKind = TransitionKind.RAISED, asset: str = "pump-1",
               episode: str = "ep-1", title: str = "{asset}: vibration high",
               priority: int = 2, breakdown: bool = False, long_text: str = "Check bearing",
               ts: float = RAISED_AT) -> Transition:
    return Transition(kind=kind, rule_id="vib-high", asset=asset, signal="vibration",
                      episode_id=episode, severity=priority, value=7.4, ts=ts,
                      reason="vibration 7.4 above 7.1 for 5 s",
                      request=RequestDetails(title=title, priority=priority,
                                             breakdown=breakdown, long_text=long_text))


def record(kind: TransitionKind = TransitionKind.RAISED, asset: str = "pump-1",
           episode: str = "ep-1", upstream_ref: str | None = None, **t: Any) -> OutboxRecord:
    """An outbox record built the way the pipeline builds them (gateway.messages)."""
    msg = messages_for(transition(kind, asset, episode, **t), ["sap"], "site-a")[0]
    return OutboxRecord(id=next(_ids), message=msg, attempts=0, upstream_ref=upstream_ref)


def clear_record(upstream_ref: str | None, asset: str = "pump-1",
                 episode: str = "ep-1") -> OutboxRecord:
    return record(TransitionKind.CLEARED, asset, episode, upstream_ref, ts=RAISED_AT + 600)


def retried(rec: OutboxRecord) -> OutboxRecord:
    return replace(rec, attempts=rec.attempts + 1)


SinkFactory = Callable[..., SapPmSink]


@pytest.fixture
async def sim() -> AsyncIterator[SapPmSimulator]:
    s = SapPmSimulator(equipment=EQUIPMENT)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def sink_config(base_url: str, **over: Any) -> SapPmSinkConfig:
    raw: dict[str, Any] = {
        "type": "sap_pm", "name": "sap", "base_url": base_url, "sap_client": "100",
        "auth": {"user": "PB_COMM", "password": {"value": "secret"}},
        "total_timeout_seconds": 5.0, "connect_timeout_seconds": 2.0,
        "asset_map": ASSET_MAP}
    return SapPmSinkConfig.model_validate(raw | over)


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    """`make_sink(base_url, **config)`: a SapPmSink for the simulator's user and client."""
    made: list[SapPmSink] = []

    def make(base_url: str, **over: Any) -> SapPmSink:
        sink = sink_config(base_url, **over).build()
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.aclose()
