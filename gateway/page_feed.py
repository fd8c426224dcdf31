"""What the running daemon hands the asset-first page, kept out of gateway/daemon.py.

`PageFeed.attach` gives the pipeline its trend hooks (a sample listener and a transition
listener, gateway/trends.py); the feed then answers the page: the trend of a signal, the asset
cards (`/status` key `assets`, built at most once a second: 0.12 s at 10,000 rule instances,
and /metrics, /readyz and every page refresh take a snapshot), and the episode pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.page_model import asset_cards
from gateway.timebase import gateway_now
from gateway.trends import Series, TrendStore
from gateway.workflow import PARTS_LANE_SUFFIX

if TYPE_CHECKING:
    from gateway.daemon import Daemon
    from rules import RuleSet

CARDS_FRESH_SECONDS = 1.0
# open episodes whose spare-parts line the cards show (the most recent first); past that, the
# episode page still tells every step
MAX_PARTS_EPISODES = 200


class PageFeed:
    def __init__(self, daemon: Daemon, trend_points: int) -> None:
        self._daemon = daemon
        self.trends = TrendStore(trend_points)
        self._cards: tuple[float, list[dict[str, Any]]] = (-CARDS_FRESH_SECONDS, [])
        self._parts: dict[str, list[str]] = {}  # episode id -> card lines about its parts
        self._parts_read_at = -CARDS_FRESH_SECONDS
        # episode id -> ((kind, state) of its parts records, card lines) as last read
        self._parts_seen: dict[str, tuple[tuple[tuple[str, str], ...], list[str]]] = {}

    @classmethod
    def attach(cls, daemon: Daemon, trend_points: int) -> PageFeed:
        """A feed whose trend ring the daemon's pipeline fills from now on."""
        feed = cls(daemon, trend_points)
        feed.follow(daemon.loaded.rules)
        assert daemon.pipeline is not None
        daemon.pipeline.sample_listeners.append(feed.trends.on_sample)
        daemon.pipeline.listeners.append(feed.trends.on_transition)
        return feed

    def follow(self, rules: RuleSet) -> None:
        """Trend only the signals these rules read (at start, and after each reload)."""
        self.trends.follow(rule_signals(rules))

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
                                            record_urls=self.record_urls(),
                                            parts_of=self._parts))
        return {"now": now, "assets": self._cards[1], "record_urls": self.record_urls(),
                "trends": {"signals": len(self.trends),
                           "dropped_signals": self.trends.dropped_signals}}

    async def refresh(self) -> None:
        """Re-read, at most once a CARDS_FRESH_SECONDS, the spare-parts line of each open
        episode from the outbox (its `#parts` lane: records, states, receipts), so the cards
        say what the outbox holds, after a restart too. The daemon's `refresh` calls it
        before each answer of the status server; the cards built next show it.

        Cost: one query for the (kind, state) of every open episode's parts records; an
        episode's whole trace is read again only when those changed or one is still pending
        (its attempts and last error move). A settled chain costs nothing more."""
        d = self._daemon
        now = gateway_now()
        if d.outbox is None or d.pipeline is None or now - self._parts_read_at < \
                CARDS_FRESH_SECONDS:
            return
        self._parts_read_at = now
        opened = sorted(d.pipeline.engine.open_episodes(), key=lambda e: -e.raised_at)
        ids = [e.episode_id for e in opened[:MAX_PARTS_EPISODES]]
        lanes = await d.outbox.episode_steps([i + PARTS_LANE_SUFFIX for i in ids])
        known: dict[str, tuple[tuple[tuple[str, str], ...], list[str]]] = {}
        for eid in ids:
            steps = tuple(lanes.get(eid + PARTS_LANE_SUFFIX, ()))
            if not steps:
                continue  # no parts chain (yet)
            before = self._parts_seen.get(eid)
            if before is not None and before[0] == steps and \
                    all(state != "pending" for _, state in steps):
                known[eid] = before
                continue
            # the trace and workflow code loads with the first parts chain, not at start
            from gateway import trace as trace_mod
            from gateway.page_workflow import card_summary, workflows

            found = await d.outbox.trace(eid)
            if found is None:
                continue
            flows = workflows(trace_mod.as_dict(found)["messages"])
            known[eid] = (steps, [(f"{f.sink}: {line}" if len(flows) > 1 else line)
                                  for f in flows if (line := card_summary(f))])
        self._parts_seen = known
        self._parts = {eid: lines for eid, (_, lines) in known.items() if lines}

    async def episode_page(self, ident: str) -> str | None:
        from gateway.page_episode import render_episode  # loads with the first episode page

        d = self._daemon
        return await render_episode(
            ident, outbox=d.outbox, trends=self.trends, defs=d.loaded.rules.rules,
            instances=[] if d.pipeline is None else d.pipeline.engine.instances(),
            record_urls=self.record_urls())


def rule_signals(rules: RuleSet) -> set[str]:
    """Every signal name a rule reads, per-asset overrides included. A rule spec names its
    mute signals too: a few rings the page does not draw, but never one it draws missing."""
    return {signal for rule in rules.rules for spec in (rule.spec, *rule.per_asset.values())
            for signal in spec.signals()}
