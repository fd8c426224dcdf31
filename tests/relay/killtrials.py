"""Kill -9 trials of the whole fleet path with real processes.

`plantbridge run` (a subprocess: real Mosquitto in, the nats upstream out) → JetStream (a real
nats-server) → `plantbridge relay` (a subprocess) → the CMMS simulator. One broker, one
nats-server, one simulator, one gateway and one relay serve all trials; each trial plays one
episode on a fresh asset and, at a seeded random moment of it, kills one of the three
processes with SIGKILL and starts it again.

The plant side is driven by conditions, not by a script of fixed length: the asset reads high
until its request is at the CMMS, then normal until its clear is there, exactly as a machine
stays broken until someone acts. So a trial ends when the episode has arrived, however long a
restart took, and a trial that loses something ends at its deadline with a message.

After the last trial everything is drained (the gateway's outbox empty, the consumer with
nothing pending) and every trial is checked again: a duplicate that arrives late, say from a
redelivery after `ack_wait`, is caught too.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from simulators.cmms import CmmsSimulator
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import Mosquitto, free_port, wait_for
from tests.relay.fleetstack import STREAM, Fleet, RelayProc, add_hub_stream
from tests.upstream.nats.natsserver import NatsServer

VICTIMS = ("gateway", "relay", "nats")
STEP_SECONDS = 0.05  # one sample per asset every 50 ms: the plant's pace in these trials
# Latest moment of a kill after the episode starts. An undisturbed episode (0.2 s debounce
# each way) is complete at the CMMS after about 0.5 s on a quiet box, so kills spread over the
# raise's debounce, its trip through outbox, JetStream and relay, and the clear's.
KILL_WITHIN_SECONDS = 0.6


@dataclass(frozen=True)
class Kill:
    victim: str  # one of VICTIMS
    after_seconds: float  # after the episode started
    phase: str  # where the episode was: "raising", "clearing" or "complete"

    def __str__(self) -> str:
        return f"{self.victim} killed at +{self.after_seconds:.2f} s ({self.phase})"


@dataclass
class TrialResult:
    n: int
    asset: str
    kills: list[Kill]
    seconds: float

    @property
    def victim(self) -> str:
        return "+".join(k.victim for k in self.kills)

    def __str__(self) -> str:
        return f"{', '.join(map(str, self.kills))}, episode complete in {self.seconds:.1f} s"


def nats_upstream(servers: list[str], heartbeat_seconds: float = 0.5) -> str:
    """The gateway's `[[upstreams]]` for the backbone, quick to reconnect for trials."""
    urls = ", ".join(f'"{s}"' for s in servers)
    return f"""
[[upstreams]]
type = "nats"
name = "backbone"
servers = [{urls}]
stream = "{STREAM}"
area = "line-1"
heartbeat_seconds = {heartbeat_seconds}
request_timeout_seconds = 2
connect_timeout_seconds = 1
reconnect_wait_seconds = 0.2
"""


@dataclass
class KillTrials:
    """The shared stack and the trials run on it. `async with` starts and stops it all."""

    tmp: Path
    broker: Mosquitto
    sim: CmmsSimulator
    seed: int
    kills: int = 1  # processes killed per trial (distinct ones, each at its own moment)
    server: NatsServer = field(init=False)
    fleet: Fleet = field(init=False)
    stack: Stack = field(init=False)
    relay: RelayProc = field(init=False)
    port: int = field(default_factory=free_port)  # the gateway's status page
    results: list[TrialResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.server = NatsServer(self.tmp)
        self.fleet = Fleet(self.tmp, [self.server.url], self.sim)
        self.stack = Stack(self.tmp, self.broker, self.sim)

    async def __aenter__(self) -> KillTrials:
        # ack_wait short enough that an event held by a killed relay comes back within a trial
        self.relay = self.fleet.relay("r1", in_flight=8, ack_wait_seconds=2)
        try:
            self.server.start()
            await add_hub_stream(self.server.url)
            self.stack.write_config(vibration_rule(0.2, 0.2), http_port=self.port,
                                    upstream=nats_upstream(self.fleet.servers))
            self.relay.start()
            self.stack.spawn_daemon()
            await self.stack.wait_subprocess_up(self.port)
            await self.relay.wait_ready()
        except BaseException:  # no process left behind when the stack cannot start
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stack.close()
        if self.stack.proc is not None and self.stack.proc.poll() is None:
            self.stack.power_cut()
        self.fleet.stop_all()
        self.server.stop()

    # --- one trial --------------------------------------------------------------------------

    async def trial(self, n: int, timeout: float = 45.0) -> TrialResult:
        asset = f"pump-k{n}"
        victims = self.rng.sample(VICTIMS, self.kills)
        moments = sorted(self.rng.uniform(0.0, KILL_WITHIN_SECONDS) for _ in victims)
        started = time.monotonic()
        plant = asyncio.create_task(self._episode(asset), name=f"plant:{asset}")
        done: list[Kill] = []
        try:
            for victim, at in zip(victims, moments, strict=True):
                # The moment is chosen by the seed; waiting for it is the chaos, not a
                # correctness wait. It ends early only if the episode is complete already.
                await asyncio.wait({plant}, timeout=max(0.0, started + at - time.monotonic()))
                done.append(Kill(victim, at, self.phase(asset)))
                await self.kill_and_restart(victim)
            await asyncio.wait_for(asyncio.shield(plant), timeout)
        except TimeoutError:
            raise AssertionError(
                f"trial {n} (seed {self.seed}): {asset} not delivered within {timeout} s after "
                f"{', '.join(map(str, done))}: {len(self.requests(asset))} request(s), "
                f"{len(self.clears(asset))} clear(s)\n{self.logs()}") from None
        finally:
            plant.cancel()
        self.check(asset, f"trial {n} ({', '.join(map(str, done))})")
        result = TrialResult(n, asset, done, time.monotonic() - started)
        self.results.append(result)
        return result

    async def _episode(self, asset: str) -> None:
        """High until the request is at the CMMS, then normal until its clear is."""
        while not self.requests(asset):
            await asyncio.to_thread(self.stack.publish, asset, "vibration", 8.0)
            await asyncio.sleep(STEP_SECONDS)
        while not self.clears(asset):
            await asyncio.to_thread(self.stack.publish, asset, "vibration", 3.0)
            await asyncio.sleep(STEP_SECONDS)

    async def kill_and_restart(self, victim: str) -> None:
        """SIGKILL one process and start it again; returns once it works again."""
        if victim == "gateway":
            await self.stack.restart_subprocess(self.port, "kill")
        elif victim == "relay":
            self.relay.kill()
            self.relay.start()
            await self.relay.wait_ready()
        elif victim == "nats":
            self.server.stop(signal.SIGKILL)
            self.server.start()  # same port and store: what a restarted server finds
        else:
            raise ValueError(f"victim {victim!r}: one of {VICTIMS}")

    # --- what arrived ---------------------------------------------------------------------

    def requests(self, asset: str) -> list[dict[str, object]]:
        return [r for r in self.sim.requests if r["body"]["asset"] == asset]

    def clears(self, asset: str) -> list[dict[str, object]]:
        ids = {r["id"] for r in self.requests(asset)}
        return [u for u in self.sim.status_updates if u["request_id"] in ids]

    def phase(self, asset: str) -> str:
        if not self.requests(asset):
            return "raising"
        return "clearing" if not self.clears(asset) else "complete"

    def check(self, asset: str, what: str) -> None:
        """One request and one clear for the asset's one episode: 0 lost, 0 duplicated."""
        reqs, clears = self.requests(asset), self.clears(asset)
        assert len(reqs) == 1, f"{what}: {len(reqs)} requests for {asset} (seed {self.seed})"
        assert len(clears) == 1, f"{what}: {len(clears)} clears for {asset} (seed {self.seed})"

    async def drained(self, timeout: float = 30.0) -> None:
        """Nothing left anywhere: the gateway's outbox is empty and the relay's consumer has
        no event pending or unacknowledged. Then nothing more can arrive at the CMMS."""
        await self.stack.wait_drained(self.port, timeout)

        async def consumer_idle() -> bool:
            st = await self.relay.status()
            return st is not None and st["lag"] == 0 and st["ack_pending"] == 0 \
                and st["in_flight"] == 0

        await wait_for(consumer_idle, timeout, "the relay's consumer idle", interval=0.1)

    def check_all(self) -> None:
        """Every trial again, after the drain, and nothing at the CMMS that no trial made."""
        for r in self.results:
            self.check(r.asset, f"trial {r.n} after the drain")
        assets = {str(req["body"]["asset"]) for req in self.sim.requests}
        assert assets == {r.asset for r in self.results}, f"unexpected requests: {assets}"
        assert len(self.sim.status_updates) == len(self.results)

    def logs(self) -> str:
        return (f"--- gateway:\n{self.stack.daemon_log()[-1500:]}\n"
                f"--- relay:\n{self.relay.log()[-1500:]}")
