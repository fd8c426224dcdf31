"""The bearing-failure workflow on the page, in headless chromium, through the real daemon.

Vibration on pump-1 raises the rule with failure code BEARING against the SAP simulator; the
registry lists two parts, the bearing's stock is below its reorder level. The gateway creates
the notification, reads the stock, reserves both parts and orders the bearing. A planner then
puts the notification in process and completes it in SAP while the vibration is still high;
the daemon's own status poller reads that back (its round is started here rather than waited
for: SAP's `status_poll_seconds` is 300 s). The episode page must show every step with its
state and upstream id, and the state history upstream; the asset card the one-line parts
summary. Screenshots: tests/artifacts/episode-workflow.png, asset-card-parts.png.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from simulators.sap_pm import SapPmSimulator
from tests.browser.test_asset_page import _cards
from tests.browser.test_page import ARTIFACTS, _text, browse, chromium
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack
from tests.e2e.test_bearing_workflow import ASSETS, RULE, chain_done, sap_upstream
from tests.harness import free_port, wait_for

RECORD_URL = "https://sap.example/notification/{receipt}"


@pytest.fixture
async def sap() -> AsyncIterator[SapPmSimulator]:
    sim = SapPmSimulator(port=0, equipment=["4711"])
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def _steps(dom: str) -> dict[str, tuple[str, str]]:
    """step -> (state, the words of its row) of the episode page's workflow table."""
    rows = re.findall(r'<tr class="step [^"]*" data-step="(\w+)" data-state="([^"]+)">(.*?)</tr>',
                      dom, flags=re.S)
    return {step: (state, _text(row)) for step, state, row in rows}


async def test_episode_page_shows_each_parts_step_and_the_state_upstream(
        stack: Stack, sap: SapPmSimulator, tmp_path: Path) -> None:
    binary = chromium()
    port = free_port()
    sap.materials.set_stock("BRG-6205", "1010", "0001", 3)  # below its reorder level 4
    sap.materials.set_stock("SEAL-40", "1010", "0001", 5)
    (stack.tmp / "assets.toml").write_text(ASSETS)
    upstream = sap_upstream(sap).replace('name = "sap"',
                                         f'name = "sap"\nrecord_url = "{RECORD_URL}"')
    path = stack.write_config(RULE.format(code="BEARING", policy=""), upstream=upstream,
                              http_port=port)
    path.write_text(path.read_text().replace('site = "e2e"',
                                             'site = "e2e"\nassets_file = "assets.toml"', 1))
    d = await stack.start_daemon()
    await stack.play("pump-1", [3.0] * 2 + [8.0] * 12)  # raised, and it stays high
    await wait_for(lambda: chain_done(sap, 1), 30, "notification, reservation, requisition")
    await stack.settled()
    [number] = [n["MaintenanceNotification"] for n in sap.notifications]
    [reservation] = sap.materials.reservation_numbers()
    [requisition] = sap.materials.requisition_numbers()

    # The planner's side in SAP, read back by the daemon's own poller.
    assert d.status_both_ways is not None
    [poller] = [p for p in d.status_both_ways.pollers if p.reader.name == "sap"]
    await poller.poll_once()
    sap.move(number, "in_progress")
    await poller.poll_once()
    sap.move(number, "completed")
    await poller.poll_once()

    [episode] = d.snapshot()["open_episodes"]
    url = f"http://127.0.0.1:{port}/"

    summary = f"parts: reserved 2 items, requisition {requisition}"

    async def card_says_parts() -> bool:  # the cards are rebuilt at most once a second
        async with aiohttp.ClientSession() as http, http.get(url + "status") as r:
            doc = await r.json()
        return [p for a in doc["assets"] for c in a["conditions"] for p in c["parts"]] == [
            summary]

    await wait_for(card_says_parts, 15, "the card's parts line")
    profile = tmp_path / "chromium-profile"
    cards = _cards(await browse(binary, url, profile, "--dump-dom"))
    assert summary in _text(cards["pump-1"])

    ep_url = url + "episode/" + episode["episode_id"].replace("/", "%2F")
    dom = await browse(binary, ep_url, profile, "--dump-dom")
    steps = _steps(dom)
    assert {k: v[0] for k, v in steps.items()} == {
        "request": "accepted", "stock": "accepted", "reservation": "accepted",
        "requisition": "accepted", "upstream": "completed", "clear": "waiting"}, steps
    assert f"upstream id {number}" in steps["request"][1]
    assert f'href="{RECORD_URL.format(receipt=number)}"' in dom
    assert "levels seen: BRG-6205@1010/0001 3, SEAL-40@1010/0001 5" in steps["stock"][1]
    assert f"reservation {reservation}" in steps["reservation"][1]
    assert f"requisition {requisition}" in steps["requisition"][1]
    assert re.search(r"created \S+Z.* \u2192 in progress \S+Z.* \u2192 completed \S+Z",
                     steps["upstream"][1]), steps["upstream"]
    assert "the condition is still active" in steps["clear"][1]
    # the same steps in what `trace` prints, shown on the page too
    assert "workflow at sap:" in _text(dom)

    ARTIFACTS.mkdir(exist_ok=True)
    for name, page, size in (("episode-workflow.png", ep_url, "1280,1600"),
                             ("asset-card-parts.png", url, "768,900")):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        await browse(binary, page, profile, f"--window-size={size}", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000, f"{name} is (nearly) empty"
