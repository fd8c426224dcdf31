"""The workflow on the page against Maximo, through the real daemon and the Maximo simulator.

Two things only Maximo has: a linked work order's receipt is `WO:<wonum>` and must link to
the work order (the `{kind}` placeholder of `record_url` becomes `wotrack`), and a parts step
Maximo refuses (an item not stocked in the storeroom) is dead-lettered and must say so on the
episode page and on the card, with the `plantbridge dead-letters` hint, while the clear goes
out regardless. The page is rendered by the daemon's own feed (no browser: the browser test
of the workflow runs against SAP).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from gateway.daemon import Daemon
from simulators.maximo import MaximoSimulator
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack
from tests.e2e.test_bearing_workflow_maximo import configure, low_stock
from tests.harness import wait_for

RECORD_URL = ("https://mx.example/maximo/ui/?event=loadapp&value={kind}"
              "&additionalevent=useqbe&additionaleventvalue={receipt}")


@pytest.fixture
async def maximo() -> AsyncIterator[MaximoSimulator]:
    sim = MaximoSimulator(assets={"PUMP-1": "BEDFORD"})
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def with_record_url(stack: Stack) -> None:
    path = stack.tmp / "plantbridge.toml"
    path.write_text(path.read_text().replace('name = "maximo"',
                                             f'name = "maximo"\nrecord_url = "{RECORD_URL}"'))


def steps(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-step="(\w+)" data-state="([^"]+)"', page))


async def card_parts(d: Daemon, expected: list[str]) -> None:
    """Wait until the cards carry `expected` as their parts lines (they are re-read from the
    outbox and rebuilt at most once a second)."""
    def lines() -> list[str]:
        return [p for a in d.snapshot()["assets"] for c in a["conditions"] for p in c["parts"]]

    async def shown() -> bool:
        await d.refresh()  # what the status server does before each answer
        return lines() == expected

    await wait_for(shown, 10, f"the cards' parts lines {expected}")


async def test_linked_work_order_links_to_the_work_order(stack: Stack,
                                                         maximo: MaximoSimulator) -> None:
    low_stock(maximo)
    wo = maximo.plant_work_order("PUMP-1", status="APPR", failurecode="BEARING")
    configure(stack, maximo, policy='existing_work = "link"')
    with_record_url(stack)
    d = await stack.start_daemon()
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
    await wait_for(lambda: len(maximo.reservations) == 2 and len(maximo.requisitions) == 1,
                   20, "parts reserved against the work order")
    await stack.settled()
    [episode] = d.snapshot()["open_episodes"]
    await wait_for(lambda: any(r["state"] == "created" for r in d.snapshot()["upstream_status"]
                               ["records"]), 20, "the WO read back")
    assert d.page_feed is not None
    page = await d.page_feed.episode_page(episode["episode_id"])
    assert page is not None
    link = RECORD_URL.format(kind="wotrack", receipt=wo["wonum"]).replace("&", "&amp;")
    assert f'href="{link}"' in page
    assert f'>WO:{wo["wonum"]}</a>' in page
    assert steps(page) == {"request": "accepted", "stock": "accepted",
                           "reservation": "accepted", "requisition": "accepted",
                           "upstream": "created", "clear": "waiting"}
    ids = ",".join(r["invreserveid"] for r in maximo.reservations)
    assert f"reservation {ids}" in page
    assert f"requisition {maximo.requisitions[0]['prnum']}" in page
    await card_parts(d, [
        f"parts: reserved 2 items, requisition {maximo.requisitions[0]['prnum']}"])
    [cond] = [c for a in d.snapshot()["assets"] for c in a["conditions"]]
    [up] = cond["upstreams"]
    assert up["url"] == RECORD_URL.format(kind="wotrack", receipt=wo["wonum"])


async def test_a_refused_reservation_says_so_and_the_clear_still_goes(
        stack: Stack, maximo: MaximoSimulator) -> None:
    maximo.set_stock("BRG-6205", "CENTRAL", "BEDFORD", 9)  # SEAL-40 is not stocked there
    configure(stack, maximo)
    with_record_url(stack)
    d = await stack.start_daemon()
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)
    await wait_for(lambda: any(x["kind"] == "parts_reservation"
                               for x in d.snapshot()["dead_letters"]), 20,
                   "the reservation dead-lettered")
    [dead] = [x for x in d.snapshot()["dead_letters"] if x["kind"] == "parts_reservation"]
    [episode] = d.snapshot()["open_episodes"]
    await card_parts(d, ["parts: reservation REFUSED (dead letter)"])
    [sr] = maximo.tickets
    await stack.play("pump-1", [3.0] * 12)
    await wait_for(lambda: maximo.tickets[0]["status"] == "RESOLVED", 20, "the clear resolved it")
    await stack.settled()
    assert d.page_feed is not None
    page = await d.page_feed.episode_page(episode["episode_id"])
    assert page is not None
    got = steps(page)
    # the SR as read back at the last poll (every 0.3 s): resolved by our clear by now, or not
    assert got.pop("upstream") in ("waiting", "created", "completed")
    assert got == {"request": "accepted", "stock": "accepted", "reservation": "dead-lettered",
                   "requisition": "waiting", "clear": "accepted"}
    assert f"plantbridge dead-letters --requeue {dead['id']}" in page
    assert "SEAL-40" in page and "not stocked" in page
    link = RECORD_URL.format(kind="sr", receipt=sr["ticketid"]).replace("&", "&amp;")
    assert f'href="{link}"' in page  # an SR receipt: the SR application
