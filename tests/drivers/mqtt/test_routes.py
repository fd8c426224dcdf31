"""The topic -> route cache: the same answers as working it out each time, and bounded."""

from __future__ import annotations

import pytest

from drivers.mqtt.config import MqttSourceConfig
from drivers.mqtt.routes import Route, Router

TOPICS = ["plant/p1/temp", "plant/p9/x", "site/a/b", "other/x", "plant/p1/temp", "plant//x",
          "$SYS/broker", "site", "plant/p2/vib", "other/x", "plant/p1/temp"]


def router(cache_size: int) -> Router:
    cfg = MqttSourceConfig.model_validate({
        "name": "m",
        "subscriptions": [
            {"pattern": "plant/+asset/+signal"},
            {"pattern": "site/#", "asset": "pump-1", "signal": "vibration", "format": "value"}],
        "topics": [{"topic": "plant/p9/x", "asset": "press-1", "signal": "pressure"}]})
    return Router(cfg.subscriptions, cfg.topics, cache_size=cache_size)


def meaning(route: Route | None) -> tuple[str | None, str | None, int] | None:
    return None if route is None else (route.asset, route.signal, route.filter_id)


def test_cached_routes_mean_what_uncached_ones_do() -> None:
    cached, plain = router(100), router(0)
    assert [meaning(cached.route(t)) for t in TOPICS] == [meaning(plain.route(t)) for t in TOPICS]
    assert plain.cached == 0
    assert cached.cached == len(set(TOPICS))  # unmatched topics are remembered too
    assert cached.route("plant/p1/temp") is cached.route("plant/p1/temp")  # one lookup


def test_cache_is_bounded_and_keeps_answering_right() -> None:
    small, plain = router(3), router(0)
    for _ in range(3):  # more distinct topics than the cache holds, over and over
        for t in TOPICS:
            assert meaning(small.route(t)) == meaning(plain.route(t))
            assert small.cached <= 3
    assert small.cached == 3


def test_negative_cache_size_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        router(-1)
