"""The asset section as HTML: server-side filters, a bounded number of trends, escaping."""

from __future__ import annotations

from gateway.page import MAX_CHARTS, assets_section, filters
from gateway.trends import TrendStore


def _card(i: int, state: str, line: str) -> dict[str, object]:
    return {"asset": f"m<{i}>", "state": state, "line": line, "area": None, "conditions": [],
            "signals": [{"signal": "temp", "state": "normal", "alarm": [80.0], "clear": [70.0],
                         "value": 50.0, "last_sample_at": None}]}


def test_filters_and_the_trend_budget() -> None:
    cards = [_card(i, "raised" if i < 3 else "normal", "L1" if i % 2 else "L2")
             for i in range(200)]
    series_of = TrendStore(10).series
    page = assets_section({"assets": cards, "now": 1000.0}, series_of)
    assert page.count("<svg") == MAX_CHARTS
    assert "Trends are drawn for the first 60 signals" in page
    assert "m&lt;0&gt;" in page and "m<0>" not in page
    assert "Assets (200: 3 raised, 197 normal)" in page
    only = assets_section({"assets": cards, "now": 1000.0}, series_of, {"state": "raised"})
    assert only.count('class="card raised"') == 3 and only.count('<section class="card ') == 3
    assert "Assets (3 shown of 200:" in only and "Trends are drawn" not in only
    l1 = assets_section({"assets": cards, "now": 1000.0}, None, {"line": "L1",
                                                                 "state": "raised"})
    assert l1.count('<section class="card ') == 1  # m<1>: raised on L1
    none = assets_section({"assets": cards, "now": 1000.0}, None, {"line": "L9"})
    assert "No asset matches this filter." in none
    bar = filters(cards, {"line": "L1"})
    assert '<option value="L1" selected>L1</option>' in bar and 'id="f-area"' not in bar
