"""The asset-first page in headless chromium: one card per asset, its state by colour and word.

Scenario: pump-1 raised (its request in the CMMS, whose id links into the CMMS's own page),
pump-2 pending (a long on-delay running), pump-3 with no data (its rule never saw a sample),
pump-4 muted by its maintenance_mode signal, pump-5 shelved by a technician with
`plantbridge shelve` beside the running daemon. The DOM chromium built is read (after the page's
script ran): each card says its state, the raised one's trend draws the alarm level and the
raise mark, the record link is there. Screenshots at 1280 and 768 px go to tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from tests.browser.test_page import ARTIFACTS, CHROMIUM_FLAGS, _text, browse, chromium
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack
from tests.harness import free_port, wait_for

RULES = """
[[rule]]
id = "vib-high"
kind = "threshold"
assets = ["pump-1", "pump-3", "pump-4", "pump-5"]
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = 0.3
severity = 2
title = "High vibration on {asset}"
suppress_while = [{ signal = "maintenance_mode", equals = 1.0 }]

[[rule]]
id = "vib-slow"
kind = "threshold"
assets = ["pump-2"]
signal = "vibration"
above = 7.1
clear_below = 6.0
on_delay_seconds = 3600
severity = 3
title = "Vibration creeping up on {asset}"
"""

RECORD_URL = "https://cmms.example/workrequests/{receipt}"


def _cards(dom: str) -> dict[str, str]:
    """asset -> the HTML of its card."""
    found = re.findall(r'(<section class="card[^"]*" data-asset="([^"]+)".*?</section>)', dom,
                       flags=re.S)
    return {asset: html for html, asset in found}


async def test_cards_show_each_state_with_trend_levels_and_links(stack: Stack,
                                                                 tmp_path: Path) -> None:
    binary = chromium()
    port = free_port()
    upstream = stack.rest_upstream().replace('name = "cmms"',
                                             f'name = "cmms"\nrecord_url = "{RECORD_URL}"')
    cfg = stack.write_config(RULES, http_port=port, upstream=upstream)
    d = await stack.start_daemon()
    shelve = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "gateway.cli", "shelve", "pump-5", "--asset", "--for", "1h",
        "--reason", "bearing being replaced", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60)
    assert shelve.returncode == 0, shelve

    stack.publish("pump-4", "maintenance_mode", 1.0)
    await stack.play("pump-1", [3.0, 3.1, 3.0] + [8.0] * 10 + [7.8])
    await stack.play("pump-2", [3.0] + [8.0] * 3)
    await stack.play("pump-4", [3.0] + [8.0] * 10)
    await wait_for(lambda: len(stack.sim.requests) == 1, 15, "pump-1's request delivered")
    receipt = str(stack.sim.requests[0]["id"])
    await stack.play("pump-5", [3.0] + [8.0] * 10)  # shelved: no request
    await wait_for(lambda: {c["asset"]: c["state"] for c in d.snapshot()["assets"]} == {
        "pump-1": "raised", "pump-2": "pending", "pump-3": "no data", "pump-4": "muted",
        "pump-5": "shelved"}, 15, "each pump in its state")

    url = f"http://127.0.0.1:{port}/"
    profile = tmp_path / "chromium-profile"
    dom = await browse(binary, url, profile, "--dump-dom")
    cards = _cards(dom)
    assert list(cards)[:3] == ["pump-1", "pump-2", "pump-3"], "problems first"
    assert set(cards) == {"pump-1", "pump-2", "pump-3", "pump-4", "pump-5"}
    for asset, word in (("pump-1", "raised"), ("pump-2", "pending"), ("pump-3", "no data"),
                        ("pump-4", "muted"), ("pump-5", "shelved")):
        assert f'data-state="{word}"' in cards[asset], (asset, cards[asset][:300])
        assert f'<span class="badge state">{word}</span>' in cards[asset]
    raised = cards["pump-1"]
    assert 'class="alarm-level" data-level="7.1"' in raised
    assert 'class="clear-level" data-level="6"' in raised
    marks = re.findall(r'<g class="mark raised[^"]*" data-ts="([\d.]+)"', raised)
    assert len(marks) == 1, raised
    episode = next(e for e in d.snapshot()["open_episodes"] if e["asset"] == "pump-1")
    assert abs(float(marks[0]) - float(episode["episode_id"].rsplit("/", 1)[1]) / 1000) < 0.01
    assert '<polyline class="value"' in raised
    assert f'href="{RECORD_URL.format(receipt=receipt)}"' in raised
    assert "condition holds since" in cards["pump-2"]
    # an hour ahead: after 23:00 UTC that is tomorrow, and the page then gives the date too
    assert re.search(r"raises at (\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d unless it recovers",
                     cards["pump-2"])
    assert "no sample yet" in cards["pump-3"]
    text = _text(dom)
    assert text.index("Assets (5") < text.index("Open episodes")
    assert "bearing being replaced" in text  # the shelf, with its reason
    assert "held back: shelved, no request sent" in _text(cards["pump-5"])
    assert len(stack.sim.requests) == 1  # the shelved pump raised nothing upstream

    # The page refreshes itself in place (virtual time runs its 5 s timer twice).
    later = await browse(binary, url + "?state=raised", profile, "--dump-dom",
                         "--virtual-time-budget=11000")
    assert re.search(r'<body data-refreshed="[12]"', later), later[:400]
    assert list(_cards(later)) == ["pump-1"], "the refresh keeps the filter"

    # A filter in the link: only the raised card, and the filter says so.
    filtered = await browse(binary, url + "?state=raised", profile, "--dump-dom")
    assert list(_cards(filtered)) == ["pump-1"]
    assert '<option value="raised" selected="">raised</option>' in filtered
    assert "Assets (1 shown of 5:" in _text(filtered)

    # The episode page: trend, the rule as written (file and line), delivery history, link.
    ep_dom = await browse(binary, url + "episode/" + episode["episode_id"].replace("/", "%2F"),
                          profile, "--dump-dom")
    ep_text = _text(ep_dom)
    assert "rules.toml:2" in ep_text, ep_text[:600]
    assert 'id = "vib-high"' in ep_text
    assert f"delivered, upstream id {receipt}" in ep_text
    assert f'href="{RECORD_URL.format(receipt=receipt)}"' in ep_dom
    assert re.search(r'<g class="mark raised', ep_dom)

    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1280, 1000), (768, 1400)):
        shot = ARTIFACTS / f"asset-page-{width}.png"
        shot.unlink(missing_ok=True)
        await browse(binary, url, profile, f"--window-size={width},{height}",
                     f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000, f"the {width} px screenshot is (nearly) empty"
    shot = ARTIFACTS / "episode-page.png"
    shot.unlink(missing_ok=True)
    await browse(binary, url + "episode/" + episode["episode_id"].replace("/", "%2F"), profile,
                 f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
    assert "--window-size=1280,900" in CHROMIUM_FLAGS  # the later flag above overrides it
