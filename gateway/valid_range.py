"""Valid ranges: a reading outside what its sensor can measure is bad data, not a value.

A disconnected 4-20 mA input reads 0 or full scale, the register of a dead I/O card 65535
(6553.5 once scaled), a PLC writes -9999 for "no value", a broken encoder 1e300. A threshold
rule takes any of them for a real excursion, and a maintenance request for "high vibration"
follows for what is a broken sensor. A source's `[[sources.valid_ranges]]` say what a signal
can read; a reading outside is handed on with quality BAD and no value, as if the device had
flagged it itself:

- process rules ignore it (a pending on/off delay is cancelled; an episode neither raises nor
  clears), a `bad_quality` rule sees a failed sensor, a stale rule sees the sensor reporting;
- it is counted per source as `out_of_range` (in `rejected` on /status, on the status page and
  in `plantbridge_source_rejected_total`), and logged once per signal until it reads in range
  again, and named with its latest reading in the source's detail while it is out of range;
- `plantbridge record` builds its sources the same way, so a recording holds the reading as the
  rules saw it and a replay agrees with the gateway.

Bounds are inclusive; the first entry that matches a sample's asset and signal applies.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, Self

from pydantic import Field, model_validator

from gateway.model import Quality, Sample, SampleBatch, Source, SourceHealth
from gateway.settings import StrictModel

log = logging.getLogger("gateway.valid_range")
OUT_OF_RANGE = "out_of_range"  # the key in SourceHealth.rejected
_BAD = Quality.BAD
Limits = tuple[float, float]


class ValidRange(StrictModel):
    """What one signal can read, e.g. vibration 0..50 mm/s on every asset of a source."""

    signal: str = Field(min_length=1)
    asset_pattern: str = Field(default="*", min_length=1)  # a glob, as in a rule file
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ValidRange:
        if self.min is None and self.max is None:
            raise ValueError(f"valid range of {self.signal!r}: give min, max or both")
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"valid range of {self.signal!r}: {name} must be a finite "
                                 f"number, got {value}")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"valid range of {self.signal!r}: min {self.min:g} must be below "
                             f"max {self.max:g}")
        return self

    def limits(self) -> Limits:
        return (-math.inf if self.min is None else self.min,
                math.inf if self.max is None else self.max)

    def words(self) -> str:
        if self.min is None:
            return f"at most {self.max:g}"
        if self.max is None:
            return f"at least {self.min:g}"
        return f"{self.min:g}..{self.max:g}"


class ValidRangeSettings(StrictModel):
    """Mixed into every source's config: `[[sources.valid_ranges]]`."""

    valid_ranges: list[ValidRange] = []


class RangeCheck:
    """Turns readings outside their signal's valid range into bad data; counts and logs them."""

    __slots__ = ("_by_asset", "_logged", "_ranges", "out_of_range", "source")

    def __init__(self, source: str, ranges: Sequence[ValidRange]) -> None:
        self.source = source
        self._ranges = tuple(ranges)
        # asset -> signal -> (low, high, the range that applies), or None: the first match
        self._by_asset: dict[str, dict[str, tuple[float, float, ValidRange] | None]] = {}
        # signals out of range now (logged once): (asset, signal) -> what they read, in words
        self._logged: dict[tuple[str, str], str] = {}
        self.out_of_range = 0

    def outside_now(self, listed: int = 3) -> str:
        """The signals whose last reading was out of range, in words ("" when none)."""
        if not self._logged:
            return ""
        names = list(self._logged.values())
        more = f" and {len(names) - listed} more" if len(names) > listed else ""
        return "out of valid range: " + ", ".join(names[:listed]) + more

    def _find(self, asset: str, signal: str) -> tuple[float, float, ValidRange] | None:
        for r in self._ranges:
            if r.signal == signal and fnmatch.fnmatchcase(asset, r.asset_pattern):
                return (*r.limits(), r)
        return None

    def apply(self, samples: Sequence[Sample]) -> Sequence[Sample]:
        """`samples`, with each good reading outside its range replaced by a bad one (the
        same object when none is)."""
        out: list[Sample] | None = None
        by_asset = self._by_asset
        for i, s in enumerate(samples):
            value = s.value
            if value is None or s.quality is _BAD:
                continue
            signals = by_asset.get(s.asset)
            if signals is None:
                signals = by_asset[s.asset] = {}
            try:
                found = signals[s.signal]
            except KeyError:
                found = signals[s.signal] = self._find(s.asset, s.signal)
            if found is None:
                continue
            lo, hi, rule = found
            if lo <= value <= hi:
                if self._logged:
                    self._back_in_range(s)
                continue
            if out is None:
                out = list(samples)
            out[i] = s._replace(value=None, quality=_BAD)
            self.out_of_range += 1
            self._note(s, rule)
        return samples if out is None else out

    def _note(self, s: Sample, r: ValidRange) -> None:
        key = (s.asset, s.signal)
        first = key not in self._logged
        self._logged[key] = f"{s.asset} {s.signal} {s.value!r} (valid {r.words()})"  # the latest
        if not first:
            return
        log.warning("source %s: %s %s = %r is outside its valid range %s: taken as bad "
                    "quality (a failed sensor, not a process value); logged once until it "
                    "reads in range again", self.source, s.asset, s.signal, s.value, r.words())

    def _back_in_range(self, s: Sample) -> None:
        key = (s.asset, s.signal)
        if self._logged.pop(key, None) is not None:
            log.info("source %s: %s %s reads in range again (%r)", self.source, s.asset,
                     s.signal, s.value)


class RangedSource:
    """A source whose batches pass through a `RangeCheck`; everything else is the inner one's."""

    def __init__(self, inner: Source, check: RangeCheck) -> None:
        self.name = inner.name
        self.inner = inner
        self.check = check

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    async def batches(self) -> AsyncIterator[SampleBatch]:
        apply = self.check.apply
        inner = self.inner.batches()
        try:
            async for batch in inner:
                samples = apply(batch.samples)
                yield batch if samples is batch.samples else dataclasses.replace(
                    batch, samples=samples)
        finally:  # the inner generator ends with ours, not whenever the collector gets to it
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    def health(self) -> SourceHealth:
        h = self.inner.health()
        n = self.check.out_of_range
        if not n:
            return h
        # the signals reading out of range now are named where the source's state is shown
        outside = self.check.outside_now()
        detail = "; ".join(x for x in (h.detail, outside) if x)
        return dataclasses.replace(h, detail=detail, rejected={**h.rejected, OUT_OF_RANGE: n})


class SourceSettings(Protocol):
    """What `build_source` needs of a source's config (every driver's config has it)."""

    @property
    def name(self) -> str: ...
    @property
    def valid_ranges(self) -> list[ValidRange]: ...
    def build(self) -> Source: ...


def build_source(cfg: SourceSettings) -> Source:
    """The running source of a source config, with its valid ranges applied if it has any."""
    src = cfg.build()
    ranges = cfg.valid_ranges
    if not ranges:
        return src
    return RangedSource(src, RangeCheck(cfg.name, ranges))
