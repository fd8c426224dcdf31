"""Flood metrics: raises per 10 minutes per line, bad actors of 24 h, chattering rules."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from gateway.flood import AlarmComponents, FloodMetrics, alarm_metric_families
from gateway.model import RequestDetails, Transition, TransitionKind
from gateway.rollup import AlarmsConfig, LineConfig


def t(kind: str, rule: str, asset: str, ts: float) -> Transition:
    return Transition(kind=TransitionKind(kind), rule_id=rule, asset=asset, signal="s",
                      episode_id=f"{rule}/{asset}/{ts}", severity=3, value=1.0, ts=ts,
                      reason="r", request=RequestDetails(title="x"))


def line_of(asset: str) -> str | None:
    return "line-3" if asset.startswith("pump-") else None


def test_raises_per_line_in_ten_minutes_and_flood_flag() -> None:
    m = FloodMetrics(line_of, chatter_limit=10, flood_limit=10)
    for i in range(11):
        m.observe(t("raised", "vib", f"pump-{i}", 1000.0 + i))
    m.observe(t("raised", "vib", "fan-1", 1000.0))
    snap = m.snapshot(1011.0)
    assert snap["lines"] == {"line-3": {"raises_10min": 11, "flood": True},
                             "-": {"raises_10min": 1, "flood": False}}
    assert m.snapshot(1000.0 + 600.0 + 5.5)["lines"] == {
        "line-3": {"raises_10min": 5, "flood": False}}
    assert m.snapshot(3000.0)["lines"] == {}


def test_bad_actors_top_ten_over_24_hours() -> None:
    m = FloodMetrics(line_of, chatter_limit=100)
    for r in range(12):
        for i in range(r + 1):
            m.observe(t("raised", f"rule-{r:02}", "pump-1", 3600.0 * i + r))
    top = m.snapshot(3600.0 * 12)["bad_actors"]
    assert [row["rule_id"] for row in top] == [f"rule-{r:02}" for r in range(11, 1, -1)]
    assert top[0]["raises_24h"] == 12
    later = m.snapshot(3600.0 * 36)["bad_actors"]  # the first 24 h have passed
    assert all(row["raises_24h"] < 12 for row in later)


def test_chattering_more_than_k_changes_an_hour() -> None:
    m = FloodMetrics(line_of, chatter_limit=4)
    for i in range(3):  # 6 transitions: chattering
        m.observe(t("raised", "door", "pump-1", 100.0 + 10 * i))
        m.observe(t("cleared", "door", "pump-1", 105.0 + 10 * i))
    m.observe(t("raised", "vib", "pump-2", 100.0))
    m.observe(t("cleared", "vib", "pump-2", 110.0))
    assert m.snapshot(200.0)["chattering"] == [
        {"rule_id": "door", "asset": "pump-1", "transitions_1h": 6}]
    assert m.snapshot(100.0 + 3700.0)["chattering"] == []


def test_prometheus_families_render() -> None:
    cfg = AlarmsConfig(lines={"line-3": LineConfig(assets=["pump-*"])})
    alarms = AlarmComponents(cfg, "plant", clock=lambda: 1005.0)
    for i in range(3):
        alarms.flood.observe(t("raised", "vib", f"pump-{i}", 1000.0 + i))

    class Alarms(Collector):
        def collect(self) -> Iterator[Metric]:
            return alarm_metric_families(alarms.snapshot())

    registry = CollectorRegistry()
    registry.register(Alarms())
    text = generate_latest(registry).decode()
    assert 'plantbridge_line_raises_10min{line="line-3"} 3.0' in text
    assert 'plantbridge_rule_raises_24h{rule_id="vib"} 3.0' in text
    assert "plantbridge_shelves 0.0" in text
    assert "plantbridge_shelving_suppressed_total 0.0" in text
    assert "plantbridge_incidents_open 0.0" in text
