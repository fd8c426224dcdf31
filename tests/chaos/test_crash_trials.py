from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.trials import run_crash_trials


@pytest.mark.slow
async def test_twenty_power_cuts_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    report = await run_crash_trials(tmp_path, trials=20, assets=8, seed=20261127)
    print(report.summary())
    assert report.kills == 20
    assert report.episodes_published >= 8, "the trial produced too few episodes to mean much"
    assert report.ok, report.summary() + f"\n{report.duplicates}\n{report.missing}"
    assert report.requests == report.episodes_published == report.clears


@pytest.mark.slow
@pytest.mark.parametrize("upstream", ["sap_pm", "maximo"])
async def test_power_cuts_with_an_upstream_that_has_no_idempotency(tmp_path: Path,
                                                                  upstream: str) -> None:
    """SAP PM and Maximo deduplicate only by our external-reference look-ups."""
    report = await run_crash_trials(tmp_path, trials=10, assets=6, seed=7, upstream=upstream)
    print(report.summary())
    assert report.kills == 10
    assert report.ok, report.summary() + f"\n{report.duplicates}\n{report.missing}"
    assert report.requests == report.episodes_published == report.clears


@pytest.mark.slow
async def test_power_cuts_during_delays_and_mutes_lose_and_duplicate_nothing(
        tmp_path: Path) -> None:
    """Report-by-exception sensors, 1 s on/off delays, maintenance mutes (issue 10): kills land
    while a delay is pending or an asset is muted. Short here; the long run is
    `python -m tests.chaos.run_trials --profile delays --trials 200`."""
    report = await run_crash_trials(tmp_path, trials=8, assets=4, seed=20261204,
                                    profile="delays")
    print(report.summary())
    assert report.kills == 8
    assert report.kills_during.get("on-delay", 0) + report.kills_during.get("off-delay", 0) >= 2 \
        and report.kills_during.get("mute", 0) >= 1, (
            f"too few kills landed in a delay or a mute to mean much: {report.kills_during}")
    assert report.episodes_published >= 4, "the trial produced too few episodes to mean much"
    assert report.ok, report.summary() + f"\n{report.duplicates}\n{report.missing}"
    assert report.requests == report.episodes_published == report.clears
