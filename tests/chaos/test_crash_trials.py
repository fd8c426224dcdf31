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
