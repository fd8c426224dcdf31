"""The page's trend ring: bounded, keeps peaks, ignores the past; and the card states."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from gateway.model import Quality, RequestDetails, Sample, Transition, TransitionKind
from gateway.page_model import asset_cards, record_link
from gateway.trends import TrendRing, TrendStore
from rules.loader import load_rule_files


def test_a_ring_holds_its_points_and_a_spike_survives() -> None:
    ring = TrendRing(points=4, width=10.0)
    for t in range(0, 100):  # 100 s at 1 Hz: 10 buckets written into 4 slots
        ring.add(1000.0 + t, 9.5 if t == 95 else 1.0, Quality.GOOD)
    got = ring.buckets()
    assert [b.start for b in got] == [1060.0, 1070.0, 1080.0, 1090.0]
    assert got[-1].high == 9.5 and got[-1].low == 1.0 and got[-1].last == 1.0
    ring.add(1001.0, 50.0, Quality.GOOD)  # late: the past is not rewritten
    assert max(b.high for b in ring.buckets()) == 9.5
    ring.add(1200.0, None, Quality.BAD)
    assert ring.last_quality is Quality.BAD and ring.last_value == 1.0
    assert ring.buckets()[-1].start == 1090.0  # a bad sample draws nothing


def test_memory_at_ten_thousand_signals_is_bounded() -> None:
    store = TrendStore(points=180)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(10_000):
        store.on_sample(Sample(f"a{i // 10}", f"s{i % 10}", 1.0, Quality.GOOD, 1000.0))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # 180 points x (8 + 3 x 4) bytes + objects: about 4 KiB a signal, 40 MiB for 10,000
    assert used < 10_000 * 5 * 1024, used
    assert store.bytes_used() < 10_000 * 5 * 1024
    # More samples of the same signals cost no memory.
    n = len(store)
    for k in range(1, 200):
        store.on_sample(Sample("a0", "s0", float(k), Quality.GOOD, 1000.0 + 10 * k))
    assert len(store) == n and len(store.ring("a0", "s0").buckets()) == 180  # type: ignore[union-attr]


def test_the_per_sample_hook_is_cheap() -> None:
    store = TrendStore(points=180)
    samples = [Sample(f"a{i % 1000}", "v", float(i), Quality.GOOD, 1000.0 + i / 100)
               for i in range(100_000)]
    start = time.perf_counter()
    for s in samples:
        store.on_sample(s)
    per_sample = (time.perf_counter() - start) / len(samples)
    assert per_sample < 20e-6, f"{per_sample * 1e6:.2f} us per sample"


RULES = """
[[rule]]
id = "hot"
kind = "threshold"
assets = ["m1", "m2", "m3", "m4", "m5"]
signal = "temp"
above = 80
clear_below = 70
on_delay_seconds = 60
severity = 2
title = "hot"
suppress_while = [{ signal = "maintenance", equals = 1 }]
"""


def _transition(asset: str, ts: float) -> Transition:
    return Transition(TransitionKind.RAISED, "hot", asset, "temp", f"hot/{asset}/{ts}", 2, 90.0,
                      ts, "temp 90 above 80", RequestDetails("hot", 2, "", False, ""))


def test_each_state_of_a_card(tmp_path: Path) -> None:
    from rules import RuleEngine

    (tmp_path / "rules.toml").write_text(RULES)
    engine = RuleEngine(load_rule_files([tmp_path / "rules.toml"]))
    trends = TrendStore(points=60)
    now = 10_000.0
    feed = {"m1": [(now - 120, 90.0), (now - 30, 91.0)],  # raised (on-delay ran out)
            "m2": [(now - 10, 85.0)],  # pending
            "m4": [(now - 5, 50.0)],  # bad quality after a good one
            "m5": [(now - 5, 50.0)]}  # muted
    for asset, values in feed.items():
        for ts, v in values:
            s = Sample(asset, "temp", v, Quality.GOOD, ts)
            trends.on_sample(s)
            for t in engine.evaluate(s):
                trends.on_transition(t)
    bad = Sample("m4", "temp", None, Quality.BAD, now - 1)
    trends.on_sample(bad)
    engine.evaluate(bad)
    engine.evaluate(Sample("m5", "maintenance", 1.0, Quality.GOOD, now - 4))
    snap = {"open_episodes": [{"asset": "m1", "rule_id": "hot", "episode_id": "hot/m1/x",
                               "severity": 2, "value": 91.0, "reason": "r",
                               "raised_at": "t", "receipts": {"cmms": "WR 7"},
                               "undelivered": {}}],
            "upstream_status": {"records": [{"sink": "cmms", "episode_id": "hot/m1/x",
                                             "state": "in progress"}]},
            "shelved": [{"asset": "m3"}]}
    cards = asset_cards(engine.instances(), trends, snap, now,
                        line_of=lambda a: "L1" if a in ("m1", "m2") else "L2",
                        area_of=lambda a: None,
                        record_urls={"cmms": "https://eam.example/wr/{receipt}"})
    states = {c["asset"]: c["state"] for c in cards}
    assert states == {"m1": "raised", "m2": "pending", "m3": "shelved", "m4": "bad quality",
                      "m5": "muted"}
    assert [c["asset"] for c in cards] == ["m1", "m2", "m4", "m3", "m5"]
    assert next(c for c in cards if c["asset"] == "m3")["signals"][0]["state"] == "no data"
    m1 = cards[0]
    assert m1["line"] == "L1" and m1["signals"][0]["alarm"] == [80.0]
    assert m1["signals"][0]["clear"] == [70.0]
    link = m1["conditions"][0]["upstreams"][0]
    assert link == {"sink": "cmms", "receipt": "WR 7", "status": "in progress",
                    "url": "https://eam.example/wr/WR%207"}
    assert "shelved" in next(c for c in cards if c["asset"] == "m3")["flags"]
    assert record_link({"x": None}, "x", "1") is None
    marks = trends.series("m1", "temp", now - 1800, now).marks
    assert [m.kind for m in marks] == ["raised"]


def test_only_the_rules_signals_get_a_ring(tmp_path: Path) -> None:
    # 100,000 Modbus points, one rule signal: rings for what the page draws, not 20,000 more.
    from gateway.page_feed import rule_signals

    (tmp_path / "rules.toml").write_text(RULES)
    rules = load_rule_files([tmp_path / "rules.toml"])
    assert rule_signals(rules) == {"temp", "maintenance"}  # what the rule reads
    store = TrendStore(points=180)
    store.on_sample(Sample("m1", "speed", 1.0, Quality.GOOD, 1000.0))  # before follow: kept
    store.follow(rule_signals(rules))
    assert store.ring("m1", "speed") is None  # dropped: nothing draws it
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(10_000):
        store.on_sample(Sample(f"dev-{i // 1000}", f"p{i % 1000}", 1.0, Quality.GOOD, 1000.0))
        store.on_sample(Sample(f"dev-{i // 1000}", "temp", 2.0, Quality.GOOD, 1000.0))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(store) == 10 and store.dropped_signals == 0
    assert used < 100 * 1024, used  # 10 rings of about 4 KiB
    ring = store.ring("dev-3", "temp")
    assert ring is not None and ring.last_value == 2.0
    store.follow({"p7"})  # a reload that reads other signals drops the old rings
    assert len(store) == 0
    store.on_sample(Sample("dev-0", "p7", 3.0, Quality.GOOD, 1001.0))
    assert store.ring("dev-0", "p7") is not None
