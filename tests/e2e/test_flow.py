"""MQTT telemetry to exactly one maintenance request, through the whole real daemon."""

from __future__ import annotations

import math

from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import wait_for


async def test_episode_gives_one_request_and_one_status_update(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    await stack.start_daemon()
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    await stack.settled()
    [req] = stack.requests_for("pump-1")
    [upd] = stack.updates_for("pump-1")
    assert req["body"]["title"] == "High vibration on pump-1"
    assert req["body"]["rule_id"] == "vib-high" and req["body"]["priority"] == 2
    assert upd["request_id"] == req["id"]  # the clear references the raise's upstream id
    assert upd["body"]["status"] == "cleared"
    assert_exactly_once(stack.sim)


async def test_brief_spike_raises_nothing(stack: Stack) -> None:
    stack.write_config(vibration_rule(on_delay=1.0, off_delay=0.3))
    d = await stack.start_daemon()
    assert d.pipeline is not None
    await stack.play("pump-1", [3.0, 9.0, 9.0, 3.0])  # 0.1 s above a 1 s on-delay
    # Then normal data for longer than the on-delay, and wait until all of it was evaluated.
    await stack.play("pump-1", [3.0] * 30)
    await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.samples >= 34, 10,
                   "every sample evaluated")
    await stack.settled()
    assert stack.sim.requests == []
    assert d.pipeline.stats.raised == 0


async def test_value_hovering_at_the_alarm_level_does_not_flap(stack: Stack) -> None:
    stack.write_config(vibration_rule(on_delay=0.2, off_delay=0.2))
    d = await stack.start_daemon()
    assert d.pipeline is not None
    # Above the alarm long enough to raise, then hovering between clear (6.0) and alarm (7.1).
    hover = [7.0 + 0.4 * math.sin(i) for i in range(40)]
    await stack.play("pump-2", [8.0] * 8 + hover)
    await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.samples >= 48, 10,
                   "every sample evaluated")
    await stack.settled()
    assert len(stack.requests_for("pump-2")) == 1
    assert stack.sim.status_updates == []  # never fell below the clear level
    assert d.pipeline.stats.raised == 1 and d.pipeline.stats.cleared == 0


async def test_outage_loses_nothing_and_keeps_order(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.pipeline is not None
    await stack.sim.go_down()
    for asset in ("pump-1", "pump-2", "pump-3"):
        await stack.episode(asset)
    await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.cleared == 3, 15,
                   "three episodes raised and cleared locally")
    assert stack.sim.requests == []
    await stack.sim.come_up()
    await wait_for(lambda: len(stack.sim.status_updates) == 3, 30, "six messages upstream")
    await stack.settled()
    assert len(stack.sim.requests) == 3
    for asset in ("pump-1", "pump-2", "pump-3"):
        [req] = stack.requests_for(asset)
        [upd] = stack.updates_for(asset)
        assert upd["request_id"] == req["id"]
        assert req["created_at"] <= upd["created_at"]  # a clear never overtakes its raise
    assert_exactly_once(stack.sim)


async def test_lost_response_does_not_duplicate(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    stack.sim.faults.set("drop_after_commit", count=2)
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 20, "the clear upstream")
    await stack.settled()
    assert len(stack.sim.requests) == 1
    assert_exactly_once(stack.sim)
    assert d.forwarders[0].stats.retried >= 1  # the dropped answer really was retried


async def test_upstream_errors_are_retried_until_accepted(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    stack.sim.faults.set("error_5xx", count=3, status=503)
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 20, "the clear upstream")
    await stack.settled()
    assert len(stack.sim.requests) == 1
    assert d.forwarders[0].stats.retried >= 3
    assert_exactly_once(stack.sim)


async def test_restart_with_open_episode_raises_no_second_request(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    await stack.start_daemon()
    await stack.play("pump-1", [3.0] + [8.0] * 12)
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "the request upstream")
    await stack.stop_daemon()
    await stack.start_daemon()  # the condition is still there after the restart
    await stack.play("pump-1", [8.5] * 12 + [3.0] * 12)
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    await stack.settled()
    assert len(stack.sim.requests) == 1
    assert stack.sim.status_updates[0]["request_id"] == stack.sim.requests[0]["id"]


async def test_bad_input_is_counted_and_the_daemon_keeps_running(stack: Stack) -> None:
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    bad = [b"{not json", b'{"value": NaN}', b'{"value": "abc"}', b"", b"x" * (1024 * 1024),
           b'{"value": Infinity}', b"[]"]
    for payload in bad:
        stack.publish("pump-1", "vibration", None, raw=payload)
    _, source = d.sources["plant"]
    await wait_for(lambda: sum(source.health().rejected.values()) >= len(bad), 10,
                   "every bad payload counted")
    rejected = dict(source.health().rejected)
    assert rejected.get("malformed_json", 0) >= 1, rejected
    assert rejected.get("too_large", 0) == 1, rejected
    # Still working: a real episode after the garbage still becomes one request.
    await stack.episode("pump-1")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "the clear upstream")
    assert len(stack.sim.requests) == 1
    assert stack.task is not None and not stack.task.done()


async def test_status_page_and_metrics_tell_what_happens(stack: Stack) -> None:
    import aiohttp

    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    await stack.sim.go_down()
    await stack.play("pump-1", [3.0] + [8.0] * 10)
    await wait_for(lambda: d.forwarders[0].stats.retried >= 1, 15, "a failed delivery")
    base = f"http://127.0.0.1:{d.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/status") as r:
            status = await r.json()
        async with http.get(f"{base}/metrics") as r:
            metrics = await r.text()
        async with http.get(f"{base}/") as r:
            page = await r.text()
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
    assert status["sources"][0]["state"] == "connected"
    assert any(p.startswith("upstream cmms is not delivering (1 waiting")
               for p in status["problems"]), status["problems"]
    assert status["reload"]["rules"] == 1 and status["reload"]["instances"] == 1
    assert status["open_episodes"][0]["asset"] == "pump-1"
    assert status["outbox"]["pending"]["cmms"] >= 1
    assert 'plantbridge_raised_total 1.0' in metrics
    assert 'plantbridge_outbox_pending{sink="cmms"}' in metrics
    assert "pump-1" in page and "Open episodes" in page and "is not delivering" in page
    await stack.sim.come_up()
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "delivery after the outage")


async def test_a_rule_bug_skips_the_sample_and_monitoring_goes_on(stack: Stack) -> None:
    """Fault injection: evaluation raises for one poison value. Without containment the
    daemon would die and the broker would redeliver the same message after every restart."""
    stack.write_config(vibration_rule())
    d = await stack.start_daemon()
    assert d.pipeline is not None

    class BuggyEngine:
        def __init__(self, real: object) -> None:
            self._real = real

        def __getattr__(self, name: str) -> object:
            return getattr(self._real, name)

        def evaluate(self, sample):  # type: ignore[no-untyped-def]
            if sample.value == 666.0:
                raise ZeroDivisionError("planted bug")
            return self._real.evaluate(sample)  # type: ignore[attr-defined]

    d.pipeline.engine = BuggyEngine(d.pipeline.engine)  # type: ignore[assignment]
    stack.publish("pump-1", "vibration", 666.0)
    await wait_for(lambda: d.pipeline is not None and d.pipeline.stats.evaluation_errors == 1,
                   10, "the poison sample counted")
    assert any("rule evaluation error(s)" in p for p in d.problems())
    # A problem for an hour after the last one (readyz red meanwhile), then only counted.
    d.pipeline.stats.last_evaluation_error_at -= 3601  # type: ignore[operator]
    assert not any("rule evaluation error(s)" in p for p in d.problems())
    assert d.pipeline.stats.evaluation_errors == 1
    await stack.episode("pump-2")
    await wait_for(lambda: len(stack.sim.status_updates) == 1, 15, "monitoring goes on")
    assert stack.task is not None and not stack.task.done()
    assert len(stack.sim.requests) == 1
