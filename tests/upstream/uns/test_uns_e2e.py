"""Through the whole daemon: the `uns` upstream beside a `rest` one, from telemetry to the UNS."""

from __future__ import annotations

from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, assert_exactly_once, vibration_rule
from tests.harness import wait_for
from tests.upstream.uns.conftest import Subscriber

STATE = "acme/e2e/utilities/water/pump-1/state"




def uns_upstream(port: int) -> str:
    return f"""
[[upstreams]]
type = "uns"
name = "uns"
port = {port}
enterprise = "acme"
site = "e2e"
connect_timeout_seconds = 3
ack_timeout_seconds = 3
reconnect_initial_seconds = 0.1
reconnect_max_seconds = 0.5

[upstreams.assets.pump-1]
area = "utilities"
line = "water"
"""


async def test_raise_and_clear_reach_the_uns_beside_the_cmms(stack: Stack) -> None:
    port = stack.broker.port
    stack.write_config(vibration_rule(), upstream=stack.rest_upstream() + uns_upstream(port))
    events = Subscriber(port, ["acme/e2e/+/+/+/events/#"], client_id="e2e-events")
    states = Subscriber(port, [STATE], client_id="e2e-states")
    late: Subscriber | None = None
    try:
        await stack.start_daemon()
        await stack.episode("pump-1")
        await wait_for(lambda: len(events.on("/events/cleared")) == 1, 20, "the clear event")
        await wait_for(lambda: len(stack.sim.status_updates) == 1, 20, "the clear at the CMMS")
        await stack.settled()
        [raised] = events.on("/events/raised")
        [cleared] = events.on("/events/cleared")
        assert raised.doc["asset"] == "pump-1" and raised.doc["rule_id"] == "vib-high"
        assert raised.props["episode-id"] == cleared.props["episode-id"]
        assert raised.props["message-id"].startswith("request:")
        assert cleared.props["message-id"].startswith("cleared:")
        # The retained state went from one open condition to none.
        opened = [s.doc["open"] for s in states.seen]
        assert [len(o) for o in opened] == [1, 0], opened
        assert opened[0][0]["external_ref"] == stack.requests_for("pump-1")[0]["external_ref"]
        late = Subscriber(port, [STATE], client_id="e2e-late")
        await wait_for(lambda: len(late.seen) == 1, 5, "the retained state")
        assert late.seen[0].retain and late.seen[0].doc["open"] == []
        assert_exactly_once(stack.sim)
    finally:
        for sub in (events, states, late):
            if sub is not None:
                sub.close()
