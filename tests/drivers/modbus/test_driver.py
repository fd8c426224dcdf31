"""The Modbus source against the real plant simulator (pymodbus server) on loopback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.modbus.config import ModbusSourceConfig
from drivers.modbus.driver import DeviceState
from gateway.model import Quality, Source, SourceState
from gateway.timebase import gateway_now
from simulators.modbus_plant import Fault, ModbusPlantSimulator
from tests.drivers.modbus.support import collecting, example_raw, plant_config
from tests.harness import free_port, wait_for

ASSETS = ("pump-1", "pump-2", "fan-1")
SIGNALS = ("vibration", "temperature", "current", "running")


async def test_reads_the_whole_plant_decoded(plant: ModbusPlantSimulator) -> None:
    source = plant_config(plant.port).build()
    assert isinstance(source, Source)
    started = gateway_now()
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 2, "connected")
        # Modbus carries no device time: rules see the receive time on the gateway clock.
        latest = [got.latest(a, s) for a in ASSETS for s in SIGNALS]
        assert all(x is not None and x.device_ts is None
                   and started <= x.source_ts <= gateway_now() for x in latest)
    for asset in ASSETS:
        # Steady scenario: levels with small ripple (see simulators/scenario.py).
        vib, temp, cur, run = (got.latest(asset, s) for s in SIGNALS)
        assert vib is not None and vib.value == pytest.approx(2.5, abs=0.21)
        assert temp is not None and temp.value == pytest.approx(45.0, abs=0.51)
        assert cur is not None and cur.value == pytest.approx(12.0, abs=0.31)
        assert run is not None and run.value == 1.0
    assert source.health().samples_total >= 12
    assert source.health().state is SourceState.STOPPED


@pytest.mark.parametrize(("max_gap", "expected"), [(10, {1: 3, 2: 3, 3: 2}),
                                                   (0, {1: 4, 2: 4, 3: 3})])
async def test_simulator_sees_the_coalesced_request_count(
        plant: ModbusPlantSimulator, max_gap: int, expected: dict[int, int]) -> None:
    # A long interval: each device polls exactly once (its first, staggered, poll).
    cfg = plant_config(plant.port, interval_ms=60_000, max_gap_registers=max_gap)
    source = cfg.build()
    assert source.requests_per_cycle() == expected
    async with collecting(source) as got:
        # A poll is counted when its answer is decoded, a moment before the collector takes the
        # batch (on a loaded box, later): wait for both.
        await wait_for(lambda: all(s.polls == 1 for s in source.device_stats().values())
                       and got.all_good(ASSETS, SIGNALS), 5,
                       "one poll per device, and every point GOOD")
        assert all(s.polls == 1 for s in source.device_stats().values())
    assert dict(plant.requests_by_unit) == expected
    assert plant.request_count == sum(expected.values())


async def test_scenario_drives_values_and_nan_becomes_bad() -> None:
    port = free_port()
    # sensor-failure: pump-2 vibration has no value from 5 s to 15 s; at speed 10: 0.5..1.5 s.
    async with ModbusPlantSimulator("127.0.0.1", port, "sensor-failure", speed=10) as sim:
        source = plant_config(sim.port, interval_ms=50).build()
        async with collecting(source) as got:
            def vib(asset: str) -> list[Quality]:
                return [s.quality for s in got.samples()
                        if s.asset == asset and s.signal == "vibration"]

            await wait_for(lambda: Quality.BAD in vib("pump-2"), 5, "pump-2 vibration BAD")
            await wait_for(lambda: vib("pump-2")[-1] is Quality.GOOD, 5, "pump-2 back GOOD")
            assert Quality.BAD not in vib("pump-1")
            bad = [s for s in got.samples() if s.quality is Quality.BAD]
            assert {(s.asset, s.signal) for s in bad} == {("pump-2", "vibration")}
            assert all(s.value is None for s in bad)
            assert source.health().rejected["nan"] == len(bad)


@pytest.mark.parametrize("connections", [1, 3])
async def test_one_silent_unit_of_three_does_not_slow_the_others(
        plant: ModbusPlantSimulator, caplog: pytest.LogCaptureFixture, connections: int) -> None:
    caplog.set_level(logging.INFO, logger="drivers.modbus.driver")
    interval = 0.2
    source = plant_config(plant.port, interval_ms=int(interval * 1000),
                          timeout_seconds=0.1, connections=connections).build()
    loop = asyncio.get_running_loop()
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
        plant.faults[2] = Fault.SILENT
        await wait_for(lambda: got.latest("pump-2", "vibration").quality is Quality.BAD,  # type: ignore[union-attr]
                       3, "pump-2 BAD")
        await wait_for(lambda: source.device_stats()[2].state is DeviceState.DEGRADED, 3,
                       "unit 2 degraded")
        assert source.health().state is SourceState.DEGRADED
        assert "unit 2: degraded" in source.health().detail
        skipped_before = {u: s.skipped_cycles for u, s in source.device_stats().items()}
        start = loop.time()
        window = 3.0
        await asyncio.sleep(window)  # the measurement window itself, not a wait for a condition
        end = loop.time()
        expected = window / interval
        for asset in ("pump-1", "fan-1"):
            # Every poll of a healthy unit still lands in the window (allow the edges).
            assert got.polls(asset, start, end) >= expected - 2, asset
        for unit in (1, 3):
            assert source.device_stats()[unit].skipped_cycles == skipped_before[unit]
        # The silent unit is polled with backoff, not every cycle.
        assert got.polls("pump-2", start, end) < expected / 2
        pump2 = [s for s in got.samples() if s.asset == "pump-2" and s.quality is Quality.BAD]
        assert pump2 and all(s.value is None for s in pump2)
        assert source.health().rejected["timeout"] >= 2

        plant.faults[2] = Fault.NONE
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "pump-2 GOOD again")
        await wait_for(lambda: source.health().state is SourceState.CONNECTED, 2, "connected")
    failed = [r for r in caplog.records if "unit 2" in r.getMessage() and "failed:" in
              r.getMessage()]
    recovered = [r for r in caplog.records if "unit 2" in r.getMessage() and "answers again" in
                 r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    assert len(recovered) == 1


async def test_exception_responses_give_bad_points_counted_by_code(
        plant: ModbusPlantSimulator) -> None:
    source = plant_config(plant.port, interval_ms=50).build()
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
        plant.faults[3] = Fault.EXCEPTION
        await wait_for(lambda: not got.all_good(("fan-1",), SIGNALS), 3, "fan-1 BAD")
        await wait_for(lambda: all(got.latest("fan-1", s).quality is Quality.BAD  # type: ignore[union-attr]
                                   for s in SIGNALS), 3, "all fan-1 points BAD")
        assert got.all_good(("pump-1", "pump-2"), SIGNALS)
        assert source.health().rejected["exception_device_failure"] >= 2
        assert source.device_stats()[3].state.value in ("failing", "degraded")
        plant.faults[3] = Fault.NONE
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "fan-1 GOOD again")


async def test_slow_unit_answers_in_time_or_times_out(plant: ModbusPlantSimulator) -> None:
    plant.slow_seconds = 0.05
    plant.faults[1] = Fault.SLOW
    source = plant_config(plant.port, interval_ms=100, timeout_seconds=0.2).build()
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "slow but in time: GOOD")
        plant.slow_seconds = 0.5
        await wait_for(lambda: got.latest("pump-1", "temperature").quality is Quality.BAD,  # type: ignore[union-attr]
                       3, "pump-1 times out")
        # Late answers must not be taken for another unit's answer.
        n = len(got.samples())
        await wait_for(lambda: len(got.samples()) > n + 40, 5, "more samples")
        others = [s for s in got.samples()[n:] if s.asset != "pump-1"]
        assert others and all(s.quality is Quality.GOOD for s in others)
        assert all(s.value == pytest.approx(45.0, abs=0.51)
                   for s in others if s.signal == "temperature")
        plant.faults[1] = Fault.NONE
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "pump-1 GOOD again")


async def test_link_loss_gives_bad_samples_and_reconnects() -> None:
    port = free_port()
    cfg = plant_config(port, interval_ms=100, reconnect_max_seconds=0.5)
    source = cfg.build()
    sim = ModbusPlantSimulator("127.0.0.1", port, "steady")
    await sim.start()
    try:
        async with collecting(source) as got:
            await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
            await sim.stop()
            await wait_for(lambda: source.health().state is SourceState.RECONNECTING, 5,
                           "reconnecting")
            await wait_for(lambda: not got.all_good(ASSETS, SIGNALS), 3, "BAD samples")
            await wait_for(lambda: source.health().rejected["link_down"] >= 10, 3,
                           "BAD samples on schedule while the link is down")
            # A lost link is not the devices' fault: none is backed off, all stay on schedule.
            assert all(s.state is DeviceState.FAILING for s in source.device_stats().values())
            sim = ModbusPlantSimulator("127.0.0.1", port, "steady")
            await sim.start()
            await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 10, "GOOD after restart")
            await wait_for(lambda: source.health().state is SourceState.CONNECTED, 5,
                           "connected")
    finally:
        await sim.stop()


async def test_unreachable_at_start_reports_connecting_and_never_raises() -> None:
    cfg = ModbusSourceConfig.model_validate(example_raw(free_port()) | {
        "reconnect_max_seconds": 0.2, "connect_timeout_seconds": 0.2})
    source = cfg.build()
    async with collecting(source) as got:
        await wait_for(lambda: len(got.samples()) >= 12, 5, "BAD samples for every point")
        assert all(s.quality is Quality.BAD for s in got.samples())
        assert source.health().state is SourceState.CONNECTING
        assert "connect failed" in source.health().detail


@pytest.mark.alone  # counts cycles against the clock: a busy box makes the loop late
async def test_schedule_keeps_to_deadlines_and_counts_skipped_cycles(
        plant: ModbusPlantSimulator) -> None:
    interval = 0.05
    source = plant_config(plant.port, interval_ms=int(interval * 1000),
                          timeout_seconds=1.0).build()
    loop = asyncio.get_running_loop()
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
        plant.slow_seconds = 0.12  # pump-1's 3 requests take ~0.36 s: 7 cycles of 50 ms
        plant.faults[1] = Fault.SLOW
        before = source.device_stats()[1]
        polls0, skipped0 = before.polls, before.skipped_cycles
        start = loop.time()
        await wait_for(lambda: source.device_stats()[1].polls >= polls0 + 5, 10, "5 slow polls")
        elapsed = loop.time() - start
        after = source.device_stats()[1]
        cycles = (after.polls - polls0) + (after.skipped_cycles - skipped0)
        # Every cycle that passed was either polled or skipped, none queued up (no drift).
        assert abs(cycles - elapsed / interval) <= 2 + 0.36 / interval
        assert after.skipped_cycles - skipped0 >= 4 * (after.polls - polls0 - 1)
        assert after.state is DeviceState.OK  # slow but answering is not a failure
        plant.faults[1] = Fault.NONE
        fan = source.device_stats()[3]
        fan0, t0 = fan.polls + fan.skipped_cycles, loop.time()
        await wait_for(lambda: source.device_stats()[3].polls >= fan.polls + 60, 10,
                       "60 fan polls")
        fan = source.device_stats()[3]
        # Polled plus skipped cycles match the clock: the grid does not slip behind. A cycle at
        # each end of the window, and one more when the loop was late reading the stats (seen
        # under load: 41 counted for 38.7 elapsed), are not a slip; a slip grows with time.
        assert fan.polls + fan.skipped_cycles - fan0 == pytest.approx(
            (loop.time() - t0) / interval, abs=3)


async def test_hung_peer_is_dropped_and_reconnected(plant: ModbusPlantSimulator) -> None:
    """Every unit silent looks like a hung gateway: the connection is dropped and made again
    (one silent unit among answering ones never drops it: see the test above)."""
    source = plant_config(plant.port, interval_ms=50, timeout_seconds=0.05).build()
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 5, "every point GOOD")
        assert source.connects == 1
        for unit in (1, 2, 3):
            plant.faults[unit] = Fault.SILENT
        await wait_for(lambda: source.connects >= 2, 10, "a fresh connection")
        for unit in (1, 2, 3):
            plant.faults[unit] = Fault.NONE
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS), 10, "every point GOOD again")


async def test_retries_then_the_rest_of_a_silent_device_is_skipped(
        plant: ModbusPlantSimulator) -> None:
    raw = example_raw(plant.port)
    for dev in raw["devices"]:
        dev.update(poll_interval_ms=60_000, timeout_seconds=0.05, retries=2)
    source = ModbusSourceConfig.model_validate(raw).build()
    plant.faults[2] = Fault.SILENT
    async with collecting(source) as got:
        await wait_for(lambda: all(s.polls == 1 for s in source.device_stats().values()), 5,
                       "one poll per device")
    # Unit 2: its first read tried 1 + 2 times, its two other reads not sent (BAD at once).
    assert dict(plant.requests_by_unit) == {1: 3, 2: 3, 3: 2}
    pump2 = [s for s in got.samples() if s.asset == "pump-2"]
    assert len(pump2) == 4 and all(s.quality is Quality.BAD for s in pump2)
    assert source.health().rejected == {"timeout": 1}


async def test_a_bug_in_a_poll_task_ends_batches_loudly(
        plant: ModbusPlantSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.modbus import driver

    def broken(self: object, raw: object, ts: float) -> list[object]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(driver._Compiled, "samples", broken)
    source = plant_config(plant.port).build()
    async with source:
        with pytest.raises(RuntimeError, match="line3-modbus failed") as info:
            async with asyncio.timeout(5):
                async for _batch in source.batches():
                    pass
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        assert source.health().state is SourceState.FAILED


async def test_devices_of_one_map_share_its_decoders_and_keep_their_assets(
        plant: ModbusPlantSimulator) -> None:
    # Memory at 100,000 points: a map's decoders are built once for all devices naming it.
    # fan-1 also reads its running bit again as a point of another asset (its own plan).
    raw = example_raw(plant.port)
    for dev in raw["devices"]:
        dev.update(poll_interval_ms=100, timeout_seconds=0.2)
    raw["devices"][2]["points"] = [{"signal": "running", "asset": "fan-1-motor",
                                    "table": "holding", "address": 10, "type": "bitfield",
                                    "bit": 3}]
    source = ModbusSourceConfig.model_validate(raw).build()
    compiled = source._compiled
    assert [c.decode for c in compiled[1]] == [c.decode for c in compiled[2]]  # the same
    assert [c.decode for c in compiled[1]] != [c.decode for c in compiled[3]]
    # when a device is silent, its BAD samples name each point's asset too
    assert {(s.asset, s.signal) for c in compiled[3] for s in c.bad(0.0)} == {
        ("fan-1", sig) for sig in SIGNALS} | {("fan-1-motor", "running")}
    async with collecting(source) as got:
        await wait_for(lambda: got.all_good(ASSETS, SIGNALS)
                       and got.latest("fan-1-motor", "running") is not None, 5, "every point")
    for asset in ("pump-1", "pump-2"):  # each device's samples carry its own asset
        vib = got.latest(asset, "vibration")
        assert vib is not None and vib.value == pytest.approx(2.5, abs=0.21)
    motor, fan = got.latest("fan-1-motor", "running"), got.latest("fan-1", "running")
    assert motor is not None and fan is not None and motor.value == fan.value == 1.0
    assert {s.asset for s in got.samples()} == {*ASSETS, "fan-1-motor"}
