"""What the running daemon hands the asset-first page, kept out of gateway/daemon.py.

`PageFeed.attach` gives the pipeline its trend hooks (a sample listener and a transition
listener, gateway/trends.py); the feed then answers the page: the trend of a signal, the asset
cards (`/status` key `assets`, built at most once a second: 0.12 s at 10,000 rule instances,
and /metrics, /readyz and every page refresh take a snapshot), and the episode pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.page_episode import render_episode
from gateway.page_model import asset_cards
from gateway.timebase import gateway_now
from gateway.trends import Series, TrendStore

if TYPE_CHECKING:
    from gateway.daemon import Daemon

CARDS_FRESH_SECONDS = 1.0


class PageFeed:
    def __init__(self, daemon: Daemon, trend_points: int) -> None:
        self._daemon = daemon
        self.trends = TrendStore(trend_points)
        self._cards: tuple[float, list[dict[str, Any]]] = (-CARDS_FRESH_SECONDS, [])

    @classmethod
    def attach(cls, daemon: Daemon, trend_points: int) -> PageFeed:
        """A feed whose trend ring the daemon's pipeline fills from now on."""
        feed = cls(daemon, trend_points)
        assert daemon.pipeline is not None
        daemon.pipeline.sample_listeners.append(feed.trends.on_sample)
        daemon.pipeline.listeners.append(feed.trends.on_transition)
        return feed

    def record_urls(self) -> dict[str, str | None]:
        return {u.name: getattr(u, "record_url", None) for u in self._daemon.cfg.upstreams}

    def series(self, asset: str, signal: str, since: float, until: float) -> Series:
        return self.trends.series(asset, signal, since, until)

    def snapshot_keys(self, snap: dict[str, Any]) -> dict[str, Any]:
        """The page's keys of `/status`, from the rest of the snapshot."""
        now = gateway_now()
        if now - self._cards[0] >= CARDS_FRESH_SECONDS:
            d = self._daemon
            reg = d.loaded.registry
            instances = [] if d.pipeline is None else d.pipeline.engine.instances()
            self._cards = (now, asset_cards(instances, self.trends, snap, now,
                                            line_of=reg.line_of, area_of=reg.area_of,
                                            record_urls=self.record_urls()))
        return {"now": now, "assets": self._cards[1], "record_urls": self.record_urls(),
                "trends": {"signals": len(self.trends),
                           "dropped_signals": self.trends.dropped_signals}}

    async def episode_page(self, ident: str) -> str | None:
        d = self._daemon
        return await render_episode(
            ident, outbox=d.outbox, trends=self.trends, defs=d.loaded.rules.rules,
            instances=[] if d.pipeline is None else d.pipeline.engine.instances(),
            record_urls=self.record_urls())
