"""`plantbridge relay --trace`: what the relays did with one event, read back from the trace
stream of a real nats-server after a relay process forwarded it to the CMMS simulator."""

from __future__ import annotations

from typing import Any

from gateway.model import Outcome
from gateway.relay.config import load_relay_config
from gateway.relay.trace import read_trace, trace_text
from tests.harness import wait_for
from tests.relay.conftest import SinkMaker
from tests.relay.fleetstack import Fleet, RelayProc, episode_records
from tests.relay.test_relay import relay_cli


async def steps_of(relay: RelayProc, ident: str, last: str, n: int = 1) -> list[dict[str, Any]]:
    """The trace of `ident`, once it holds `n` steps named `last` (steps are fire-and-forget
    publishes: they land a moment after the relay acted)."""
    cfg = load_relay_config(relay.config)
    got: list[list[dict[str, Any]]] = [[]]

    async def there() -> bool:
        got[0] = await read_trace(cfg, ident)
        return sum(1 for r in got[0] if r["step"] == last) >= n

    await wait_for(there, 20, f"{n} {last!r} step(s) in the trace of {ident}", interval=0.2)
    return got[0]


async def test_trace_shows_deliveries_answers_receipts_and_dead_letters(
        fleet: Fleet, gateway_sink: SinkMaker) -> None:
    fleet.sim.faults.set("error_5xx", count=1, status=503, retry_after=None,
                         match_body="pump-0")
    relay = fleet.relay("r1")
    relay.start()
    await relay.wait_ready()
    sink = gateway_sink()
    records = episode_records(2)
    got = await sink.send(records[:2])
    assert all(d.outcome is Outcome.ACCEPTED for d in got)
    await wait_for(lambda: len(fleet.sim.requests) == 1 and len(fleet.sim.status_updates) == 1,
                   30, "episode ep-0 at the CMMS")

    # ep-0: the raise is answered 503, retried, accepted; its clear goes through at once
    rows = await steps_of(relay, "ep-0", "acked", 2)
    raise_ = [r for r in rows if ":request:" in r["msg_id"]]
    clear = [r for r in rows if ":cleared:" in r["msg_id"]]
    assert len(raise_) + len(clear) == len(rows) and all(r["relay"] == "r1" for r in rows)
    assert [(r["step"], r.get("outcome", "")) for r in raise_] == [
        ("received", ""), ("attempt", "retry"), ("nak", ""),
        ("received", ""), ("attempt", "accepted"), ("acked", "")], raise_
    request_id = fleet.sim.requests[0]["id"]
    assert raise_[4]["receipt"] == request_id and "503" in raise_[1]["reason"]
    assert [r["delivery"] for r in raise_ if r["step"] == "received"] == [1, 2]
    # the clear may come while its raise waits for the retry: then it waits too, and goes after
    tail = [(r["step"], r.get("outcome", "")) for r in clear[-3:]]
    assert tail == [("received", ""), ("attempt", "accepted"), ("acked", "")], clear
    assert all(r["step"] in ("received", "waiting", "nak") for r in clear[:-3]), clear

    # ep-1: the raise is refused for good and dead-lettered; the clear has nothing to update
    fleet.sim.faults.set("error_5xx", count=1, status=422, match_body="pump-1")
    got = await sink.send(records[2:])
    assert all(d.outcome is Outcome.ACCEPTED for d in got)
    dead = await steps_of(relay, "ep-1", "dead", 2)
    assert [r["step"] for r in dead].count("dead") == 2
    assert any(r["step"] == "attempt" and r["outcome"] == "rejected" and "422" in r["reason"]
               for r in dead), dead

    # the outbox key finds the same event as the episode id; the CLI says it in words
    key = raise_[0]["trace_subject"].rsplit(".", 1)[1]
    by_key = await read_trace(load_relay_config(relay.config), key)
    assert [r["at"] for r in by_key] == [r["at"] for r in raise_]
    text = await relay_cli(relay, "--trace", "ep-0")
    assert text.startswith(f"ep-0: {len(rows)} step(s) by relay(s) r1"), text
    assert f"cmms: accepted {request_id}" in text and "retry in" in text, text
    assert trace_text("nope", []).startswith("nothing traced for 'nope'")
