"""What a configured source can produce: the (asset, signal) pairs it knows, and what it cannot.

Each source config answers `produces() -> Produces`. A Modbus map or an OPC UA node list names
every pair; an MQTT route names a pair only where both levels are fixed, and a named wildcard
(`plant/+asset/+signal`) or a payload path makes that part unknowable before data arrives.
`plantbridge check` compares rules with it: a rule for a pair no source can produce would never
fire, which is an error where every source knows its pairs and a warning where one cannot tell.

Imports nothing of ours: drivers import it beside `gateway.settings`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Produced:
    """One route of a source. `None` in a field means: any value, named by the data."""

    asset: str | None
    signal: str | None
    via: str  # how a person finds it in the config: "topic plant/+asset/+signal"

    @property
    def exact(self) -> bool:
        return self.asset is not None and self.signal is not None

    def could(self, asset_pattern: str, signal: str) -> bool:
        """Might this route deliver `signal` for an asset matching `asset_pattern`?"""
        asset_ok = self.asset is None or fnmatch.fnmatchcase(self.asset, asset_pattern)
        return asset_ok and (self.signal is None or self.signal == signal)


@dataclass(frozen=True, slots=True)
class Produces:
    """Everything one source can deliver."""

    source: str
    routes: tuple[Produced, ...]

    @classmethod
    def of(cls, source: str, routes: Iterable[Produced]) -> Produces:
        return cls(source, tuple(routes))

    def surely(self, asset_pattern: str, signal: str) -> bool:
        """A route names this signal for a matching asset outright."""
        return any(r.exact and r.could(asset_pattern, signal) for r in self.routes)

    def maybe(self, asset_pattern: str, signal: str) -> Produced | None:
        """A route that cannot name its pairs yet might deliver it: the first such route."""
        return next((r for r in self.routes if not r.exact and r.could(asset_pattern, signal)),
                    None)


@dataclass(frozen=True, slots=True)
class Coverage:
    """The verdict for one (rule asset or pattern, signal): found, unknowable, or missing."""

    found: bool
    unsure: tuple[tuple[str, Produced], ...]  # (source, route) that might produce it


def coverage(sources: Iterable[Produces], asset_pattern: str, signal: str) -> Coverage:
    """Can any source deliver `signal` for an asset matching `asset_pattern` (a name is a
    pattern that matches itself)?"""
    unsure: list[tuple[str, Produced]] = []
    for p in sources:
        if p.surely(asset_pattern, signal):
            return Coverage(True, ())
        route = p.maybe(asset_pattern, signal)
        if route is not None:
            unsure.append((p.source, route))
    return Coverage(False, tuple(unsure))
