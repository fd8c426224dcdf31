"""Random faults before every attempt (seeded): still exactly one SR per episode, each
resolved by its clear. The waits between attempts stand for the forwarder's backoff and the
sink's unclear_retry_after_seconds: the next attempt starts once nothing is in flight."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from gateway.model import OutboxRecord, Outcome
from simulators.maximo import MaximoSimulator
from tests.harness import wait_for
from tests.upstream.maximo.conftest import SinkFactory, clear_record, raise_record

EPISODES = 20
FAULTS = ("none", "drop_after_commit", "error_5xx", "error_5xx_write", "rate_429",
          "slow_write", "conflict_412")


def arm(maximo: MaximoSimulator, fault: str) -> None:
    if fault == "error_5xx_write":
        maximo.faults.set("error_5xx", count=1, writes_only=True, retry_after=None)
    elif fault == "slow_write":
        maximo.faults.set("slow", count=1, delay_seconds=0.4, writes_only=True)
    else:
        maximo.faults.set(fault, count=1)


async def test_random_faults_give_one_resolved_sr_per_episode(
        maximo: MaximoSimulator, make_sink: SinkFactory) -> None:
    rng = random.Random(20261127)
    sink = make_sink(maximo.url, total_timeout_seconds=0.25, connect_timeout_seconds=0.25)
    outcomes: Counter[str] = Counter()

    async def deliver(rec: OutboxRecord) -> str:
        for attempt in range(30):
            arm(maximo, rng.choice(FAULTS))
            [d] = await sink.send([replace(rec, attempts=attempt)])
            maximo.faults.clear()
            outcomes[d.outcome] += 1
            if d.outcome is Outcome.ACCEPTED:
                assert d.receipt is not None
                return d.receipt
            assert d.outcome is Outcome.RETRY, d.reason
            await wait_for(lambda: maximo.active_requests == 0, 5, "nothing in flight")
        raise AssertionError(f"record {rec.id} never accepted")

    for n in range(EPISODES):
        asset = rng.choice(["pump-1", "fan-1", "mix-9"])
        receipt = await deliver(raise_record(asset=asset, episode=f"soak-{n}"))
        assert await deliver(clear_record(receipt, asset, f"soak-{n}")) == receipt

    keys = [t["externalrecid"] for t in maximo.tickets]
    assert len(keys) == EPISODES and len(set(keys)) == EPISODES  # none twice, none lost
    assert {t["status"] for t in maximo.tickets} == {"RESOLVED"}
    assert outcomes[Outcome.RETRY] >= 10  # the faults did bite
