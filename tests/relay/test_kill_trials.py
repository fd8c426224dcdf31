"""Kill -9 of the real gateway, the relay and the nats-server at seeded random moments, 20 times
on one shared stack: one request and one clear per episode at the CMMS, nothing lost, nothing
doubled (tests/relay/killtrials.py says how a trial runs).

`PB_KILL_TRIALS` and `PB_KILL_SEED` change the count and the seed; longer runs on demand:
`python -m tests.relay.run_trials --mode kill --trials 100`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from simulators.cmms import CmmsSimulator
from tests.harness import Mosquitto
from tests.relay.killtrials import VICTIMS, KillTrials
from tests.upstream.nats.natsserver import require_nats_server

TRIALS = int(os.environ.get("PB_KILL_TRIALS", "20"))


@pytest.mark.slow
async def test_kill9_gateway_relay_and_nats_at_random_moments(
        tmp_path: Path, mosquitto: Mosquitto, sim: CmmsSimulator) -> None:
    require_nats_server()
    seed = int(os.environ.get("PB_KILL_SEED", str(random.randrange(1 << 30))))
    print(f"kill trials: seed {seed} (PB_KILL_SEED={seed} repeats this run)")
    async with KillTrials(tmp_path, mosquitto, sim, seed) as trials:
        for n in range(1, TRIALS + 1):
            r = await trials.trial(n)
            print(f"trial {n}: {r}")
        await trials.drained()
        trials.check_all()
    # every kind of process was killed at least once (with 20 trials the chance that one
    # victim never comes up is 3 * (2/3)^20 = 0.1 %; the seed is printed to repeat it)
    if TRIALS >= 20:
        assert {r.victim for r in trials.results} == set(VICTIMS), trials.results
