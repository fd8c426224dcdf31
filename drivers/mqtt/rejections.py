"""Counts rejected messages per reason and logs each reason once per episode of trouble."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("drivers.mqtt")


@dataclass(slots=True)
class _Episode:
    first: float
    last: float
    count: int


class RejectionLog:
    """An episode of a reason starts with its first rejection (one warning) and ends after
    `quiet_seconds` without one (one info line with the episode's count)."""

    def __init__(self, source: str, quiet_seconds: float) -> None:
        self.counts: dict[str, int] = {}
        self._source = source
        self._quiet = quiet_seconds
        self._open: dict[str, _Episode] = {}

    def add(self, reason: str, topic: str, detail: str, now: float) -> None:
        reason = str(reason)  # plain text keys (not the Reason enum): JSON encoders take them
        self.counts[reason] = self.counts.get(reason, 0) + 1
        episode = self._open.get(reason)
        if episode is not None:
            episode.last = now
            episode.count += 1
            return
        self._open[reason] = _Episode(now, now, 1)
        log.warning("source %s: rejecting messages: %s (topic %r%s); counting them, logged "
                    "again only after %.0f s without one", self._source, reason, topic,
                    f": {detail}" if detail else "", self._quiet)

    def expire(self, now: float) -> None:
        for reason, episode in list(self._open.items()):
            if now - episode.last >= self._quiet:
                del self._open[reason]
                log.info("source %s: no %s rejections for %.0f s (%d in %.0f s before that)",
                         self._source, reason, now - episode.last, episode.count,
                         episode.last - episode.first)
