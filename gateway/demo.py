"""`plantbridge demo`: a bearing failure, end to end, on the bundled simulators.

Starts a real Mosquitto broker, the MQTT plant publisher and the CMMS API simulator on free
loopback ports, runs the real daemon on a temporary state dir with the rule files from
`config/rules.d/`, and narrates what happens. This is the only production-side module that
imports `simulators/` (the demo is a simulation by definition).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

from gateway import config as config_mod
from gateway.daemon import Daemon
from gateway.model import Transition
from simulators import scenario as scenarios
from simulators.cmms import CmmsSimulator
from simulators.mqtt_plant import MqttPlantPublisher

RULES_DIR = Path(__file__).resolve().parent.parent / "config" / "rules.d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _mosquitto(workdir: Path) -> Iterator[int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("the demo needs Debian's mosquitto: `make demo` installs it "
                         "(or: sudo apt-get install mosquitto)")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with open(workdir / "mosquitto.log", "wb") as log:
        # Its own session: Ctrl-C reaches the demo (which stops in order), not the broker.
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("mosquitto did not start; see " + str(workdir))
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def demo_config(workdir: Path, mqtt_port: int, cmms_url: str, api_key: str) -> Path:
    path = workdir / "plantbridge.toml"
    path.write_text(f"""
[gateway]
site = "demo"
state_dir = "{workdir / 'state'}"

[http]
port = 0

[rules]
files = ["{RULES_DIR}/*.toml"]

[forwarding]
retry_initial_seconds = 0.5
retry_max_seconds = 5

[[sources]]
type = "mqtt"
name = "plant-mqtt"
host = "127.0.0.1"
port = {mqtt_port}
client_id = "plantbridge-demo"

[[sources.subscriptions]]
pattern = "plant/+asset/+signal"
qos = 1
format = "json"
value_path = "value"
timestamp_path = "ts"

[[upstreams]]
type = "rest"
name = "cmms"
base_url = "{cmms_url}"
auth = {{ kind = "bearer", token = {{ value = "{api_key}" }} }}
""")
    return path


def say(t0: float, text: str) -> None:
    print(f"[{time.monotonic() - t0:5.1f}s] {text}", flush=True)


async def _narrate_upstream(sim: CmmsSimulator, t0: float) -> AsyncGenerator[None]:
    seen_req = seen_upd = 0
    while True:
        for req in sim.requests[seen_req:]:
            say(t0, f"UPSTREAM  maintenance request {req['id']} created: "
                    f"{req['body'].get('title')!r} (priority {req['body'].get('priority')}, "
                    f"ref {req['body'].get('dedup_key')})")
        seen_req = len(sim.requests)
        for upd in sim.status_updates[seen_upd:]:
            say(t0, f"UPSTREAM  status update on {upd['request_id']}: "
                    f"{upd['body'].get('status')}")
        seen_upd = len(sim.status_updates)
        yield
        await asyncio.sleep(0.2)


def scenario_problem(name: str) -> str | None:
    """None for a known scenario, else one line naming the valid ones (and the likely one)."""
    if name in scenarios.SCENARIOS:
        return None
    near = difflib.get_close_matches(name, scenarios.SCENARIOS, n=1, cutoff=0.3)
    guess = f"; did you mean {near[0]!r}?" if near else ""
    return (f"unknown scenario {name!r}{guess} Known scenarios: "
            f"{', '.join(scenarios.SCENARIOS)}")


async def run_demo(duration_seconds: float, scenario_name: str) -> int:
    scenario = scenarios.get(scenario_name)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="plantbridge-demo-") as tmp, \
            _mosquitto(Path(tmp)) as mqtt_port:
        workdir = Path(tmp)
        sim = CmmsSimulator(host="127.0.0.1", port=0, api_key="demo-key")
        await sim.start()
        try:
            loaded = config_mod.load(demo_config(workdir, mqtt_port, sim.url, "demo-key"))
            daemon = Daemon(loaded)

            def on_transition(t: Transition) -> None:
                value = "n/a" if t.value is None else f"{t.value:.2f}"
                say(t0, f"GATEWAY   {t.kind.upper():7} {t.rule_id} on {t.asset}: {t.reason} "
                        f"(value {value}, episode {t.episode_id})")

            daemon_task = asyncio.create_task(daemon.run(), name="daemon")
            await asyncio.wait_for(daemon.ready.wait(), 15)
            assert daemon.pipeline is not None
            daemon.pipeline.listeners.append(on_transition)
            say(t0, f"simulators up: mosquitto :{mqtt_port}, CMMS API {sim.url}; status page "
                    f"http://127.0.0.1:{daemon.http_port}/")
            say(t0, f"scenario {scenario.name}: {scenario.description}")
            publisher = MqttPlantPublisher("127.0.0.1", mqtt_port, scenario,
                                           interval_seconds=0.5)
            pub_task = asyncio.create_task(publisher.run(duration_seconds), name="publisher")
            narrator = _narrate_upstream(sim, t0)
            start = time.monotonic()
            last_print = -2.0
            with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
                # Ctrl-C reaches the daemon's own SIGINT handler: it stops, and so do we.
                while time.monotonic() - start < duration_seconds and not daemon_task.done():
                    elapsed = time.monotonic() - start
                    if elapsed - last_print >= 2.0:
                        v = scenario.values(elapsed)
                        say(t0, f"PLANT     pump-1 vibration {v[('pump-1', 'vibration')] or 0:.2f}"
                                f" mm/s, temperature {v[('pump-1', 'temperature')] or 0:.1f} °C")
                        last_print = elapsed
                    await anext(narrator)
            interrupted = daemon_task.done()
            pub_task.cancel()
            try:
                await pub_task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # the plant stopped early; say so, still stop in order
                say(t0, f"publisher stopped: {exc}")
            if not interrupted:  # let deliveries already in flight land before we stop
                for _ in range(25):
                    await anext(narrator)
            daemon.request_stop()
            await asyncio.wait_for(daemon_task, 30)
            await narrator.aclose()
            print(f"\nsummary: {len(sim.requests)} maintenance request(s), "
                  f"{len(sim.status_updates)} status update(s) upstream; "
                  f"{daemon.pipeline.stats.samples} samples evaluated", flush=True)
        finally:
            await sim.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(run_demo(30, "bearing-failure")))
