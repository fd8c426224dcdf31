"""Topic -> (asset, signal, decoder): exact topics by dictionary, then patterns in config order.

A plant publishes the same few thousand topics over and over, so what a topic means is worked
out once and remembered (`Router.cache_size` topics at most, unmatched ones included; when full,
the oldest entry goes): the hot path is one dictionary lookup instead of splitting the topic and
matching it against every pattern again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.mqtt.codec import PayloadDecoder
from drivers.mqtt.config import Subscription, TopicEntry
from gateway.timebase import SourceClock


@dataclass(frozen=True, slots=True)
class Route:
    """What one matched topic means: fixed or captured names, and how to decode its payload."""

    asset: str | None
    signal: str | None
    decoder: PayloadDecoder
    filter_id: int  # 1-based position of its filter in `Router.filters`


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """An MQTT filter whose `+name` levels capture asset or signal; `#...` matches any tail."""

    levels: tuple[str, ...]
    multi: bool  # ends in '#'

    @classmethod
    def parse(cls, pattern: str) -> TopicPattern:
        levels = pattern.split("/")
        multi = levels[-1].startswith("#")
        return cls(tuple(levels[:-1] if multi else levels), multi)

    @property
    def filter(self) -> str:
        """The filter sent to the broker: names stripped from wildcards."""
        out = ["+" if lvl.startswith("+") else lvl for lvl in self.levels]
        if self.multi:
            out.append("#")
        return "/".join(out)

    def match(self, topic: str) -> dict[str, str] | None:
        parts = topic.split("/")
        n = len(self.levels)
        if len(parts) < n or (len(parts) > n and not self.multi):
            return None
        # MQTT: '#' also matches the parent level itself; topics starting with '$' never
        # match a leading wildcard.
        if topic.startswith("$") and self.levels and self.levels[0].startswith(("+", "#")):
            return None
        captured: dict[str, str] = {}
        for want, got in zip(self.levels, parts, strict=False):
            if want.startswith("+"):
                if len(want) > 1:
                    if not got:
                        return None  # an empty level names nothing
                    captured[want[1:]] = got
            elif want != got:
                return None
        return captured


DEFAULT_CACHE_SIZE = 10_000  # topics remembered per source: ~2 MB at most


class Router:
    """Routes topics to their meaning. Overlapping patterns: the first in config order wins."""

    def __init__(self, subscriptions: Sequence[Subscription], topics: Sequence[TopicEntry],
                 clock: SourceClock | None = None,
                 cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """`clock`: the source's clock check, shared by all its routes (default: trust no
        device time zone, rules see receive time). `cache_size`: topics whose route is
        remembered (0: none)."""
        if cache_size < 0:
            raise ValueError(f"cache_size must be 0 or more, not {cache_size}")
        self.cache_size = cache_size
        # Routes are immutable and depend on the topic alone, so a remembered one is exact.
        self._cache: dict[str, Route | None] = {}
        clock = clock if clock is not None else SourceClock("?")
        filters: dict[str, int] = {}
        for t in topics:
            filters[t.topic] = max(filters.get(t.topic, 0), t.qos)
        patterns = [(TopicPattern.parse(s.pattern), s) for s in subscriptions]
        for pat, sub in patterns:
            filters[pat.filter] = max(filters.get(pat.filter, 0), sub.qos)
        self.filters: tuple[tuple[str, int], ...] = tuple(filters.items())
        ids = {f: i for i, f in enumerate(filters, start=1)}
        self._exact: dict[str, Route] = {
            t.topic: Route(t.asset, t.signal, PayloadDecoder(t, clock), ids[t.topic])
            for t in topics
        }
        self._patterns: list[tuple[TopicPattern, Subscription, PayloadDecoder, int]] = [
            (pat, sub, PayloadDecoder(sub, clock), ids[pat.filter]) for pat, sub in patterns
        ]

    def route(self, topic: str) -> Route | None:
        """What `topic` means, or None when no topic entry or pattern matches it."""
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        got = self._resolve(topic)
        if self.cache_size:
            if len(cache) >= self.cache_size:
                del cache[next(iter(cache))]  # the oldest: dicts keep insertion order
            cache[topic] = got
        return got

    @property
    def cached(self) -> int:
        """Topics remembered now (at most `cache_size`)."""
        return len(self._cache)

    def _resolve(self, topic: str) -> Route | None:
        exact = self._exact.get(topic)
        if exact is not None:
            return exact
        for pat, sub, decoder, filter_id in self._patterns:
            captured = pat.match(topic)
            if captured is not None:
                return Route(sub.asset or captured.get("asset"),
                             sub.signal or captured.get("signal"), decoder, filter_id)
        return None
