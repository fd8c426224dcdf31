"""One time base: the gateway clock, per-source time settings, and each source's clock check.

Rules see one clock, the gateway's (`gateway_now()`: wall time at process start plus monotonic
elapsed time, so it never jumps within a run and still means "seconds since the epoch" across
restarts). A device's own timestamp is evidence: it is kept on the sample as `device_ts`, orders
samples of one signal (see gateway.dedup), and is what rules see only when its source says
`timestamps = "device"` and that sample's clock is within `max_clock_skew_seconds` of ours.

Importable by drivers like gateway.settings: imports nothing of ours but gateway.model and
gateway.settings.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
import zoneinfo
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, cast

from pydantic import AfterValidator, Field

from gateway.model import SourceHealth
from gateway.settings import StrictModel

_WALL_AT_START = time.time()
_MONO_AT_START = time.monotonic()


def gateway_now() -> float:
    """The gateway clock in seconds since the epoch: monotonic within a run (an NTP step or an
    admin's `date -s` does not move it), the wall clock at each process start."""
    return _WALL_AT_START + (time.monotonic() - _MONO_AT_START)


class TimestampPolicy(enum.StrEnum):
    """Which time rules see. `gateway`: the receive time, always. `device`: the device's time
    when its clock is within `max_clock_skew_seconds` of ours, else the receive time."""

    GATEWAY = "gateway"
    DEVICE = "device"


class DuplicatePolicy(enum.StrEnum):
    """What happens to a sample whose device time is not newer than the newest one already
    evaluated for its signal. `skip_not_newer`: counted and skipped (a resend, a broker
    redelivery, an out-of-order arrival). `evaluate_all`: evaluated anyway (a device whose
    timestamps are too coarse or go backwards). Samples without a device time are always
    evaluated."""

    SKIP_NOT_NEWER = "skip_not_newer"
    EVALUATE_ALL = "evaluate_all"


def _zone_name(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not a known IANA time zone name (examples: "
                         "\"Europe/Berlin\", \"America/Chicago\", \"UTC\")") from None
    return name


class TimeSettings(StrictModel):
    """The time settings every source with device timestamps shares (mixed into its config:
    OPC UA, whose times are UTC by spec). Modbus carries no device time and has none."""

    # "device" (default): while the device clock is judged in step with ours (within
    # max_clock_skew_seconds), readings count at their device time, late ones included: a
    # backlog a broker delivers after a restart keeps its real spacing, so an excursion the
    # device saw during our downtime still raises (receive time would squeeze it into
    # milliseconds and its on-delay would never run out). "gateway": always receive time.
    timestamps: TimestampPolicy = TimestampPolicy.DEVICE
    # A device clock further than this from ours is counted (`clock_skew`), named in health,
    # and its samples are evaluated on receive time. Timers tick on the gateway clock, so a
    # clock off by less than this shifts delays judged by the tick by at most that much.
    max_clock_skew_seconds: float = Field(default=30.0, gt=0)
    duplicates: DuplicatePolicy = DuplicatePolicy.SKIP_NOT_NEWER

    def clock(self, source: str) -> SourceClock:
        """The running clock check for the source named `source`."""
        return SourceClock(source, self.timestamps, self._zone(), self.max_clock_skew_seconds)

    def _zone(self) -> zoneinfo.ZoneInfo | None:
        return None


class ZonedTimeSettings(TimeSettings):
    """TimeSettings for sources whose device times may come without a zone (MQTT payloads)."""

    # IANA name applied to device timestamps that carry no zone or offset. Unset: such
    # timestamps are not trusted (no silent UTC): the sample is evaluated on receive time and
    # counted as `timestamp_without_zone`.
    timezone: Annotated[str | None, AfterValidator(_zone_name)] = None

    def _zone(self) -> zoneinfo.ZoneInfo | None:
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone is not None else None


def skew_words(seconds: float) -> str:
    """A clock offset in words: "5 h 0 min behind", "2 min 3 s ahead", "in step"."""
    side = "ahead" if seconds > 0 else "behind"
    left = round(abs(seconds))
    if left == 0:
        return "in step"
    days, left = divmod(left, 86400)
    hours, left = divmod(left, 3600)
    minutes, secs = divmod(left, 60)
    if days:
        text = f"{days} d {hours} h"
    elif hours:
        text = f"{hours} h {minutes} min"
    elif minutes:
        text = f"{minutes} min {secs} s"
    else:
        text = f"{secs} s"
    return f"{text} {side}"


_WINDOW = 32  # recent skews kept (a power of two: the ring index is a mask)
_MASK = _WINDOW - 1
_EARLY = 8  # the clock is judged after each of the first readings
_LOW, _HIGH = -math.inf, math.inf  # a float strictly between is finite (NaN is not)


class SourceClock:
    """One source's view of time: stamps samples and judges whether the device clock is in step.

    A reading's skew (device time minus receive time) is the clock's offset minus the delivery
    delay, and the delay is never negative. So the clock's offset is estimated as the second
    largest skew of the last 32 readings (the least delayed; the second, so that one odd
    timestamp neither raises nor hides the note): a straggler, or a short backlog a broker
    redelivers after a restart, does not make an in-step clock look behind. A clock within
    `max_skew_seconds` is trusted: its readings keep their device time, late ones included
    (what the device measured then is what happened then). A clock beyond the limit, and any
    reading stamped further ahead of us than the limit (a time in the future would run timers
    wrong), are counted under `clock_skew` and evaluated on receive time. A backlog whose last
    32 readings are all later than the limit cannot be told from a clock that is behind: it is
    evaluated on receive time too, and the note says "(or its messages arrive that late)".
    """

    def __init__(self, source: str, policy: TimestampPolicy = TimestampPolicy.DEVICE,
                 zone: zoneinfo.ZoneInfo | None = None,
                 max_skew_seconds: float = 30.0) -> None:
        self.source = source
        self.zone = zone
        self.max_skew_seconds = max_skew_seconds
        self._use_device = policy is TimestampPolicy.DEVICE
        self._recent = [0.0] * _WINDOW  # a ring of the last skews; `_seen` says how full
        self._seen = 0
        self._in_step = True
        self.counted: dict[str, int] = {}  # "clock_skew", "timestamp_without_zone" -> count

    def stamp(self, device_ts: float | None, received: float) -> tuple[float, float | None]:
        """(source_ts for rules, device_ts as evidence) of a sample received at `received`
        (gateway clock) that the device stamped `device_ts` (None: it gave no time)."""
        if device_ts is None:
            return received, None
        skew = device_ts - received
        seen = self._seen  # the hot path: a few operations per device reading
        self._recent[seen & _MASK] = skew
        self._seen = seen + 1
        limit = self.max_skew_seconds
        # Judge the clock again when this reading disagrees with the verdict (cheap while all
        # is steady), after each of the first readings, and once per window.
        if (-limit <= skew <= limit) is not self._in_step or seen < _EARLY or not seen & _MASK:
            offset = self._offset()
            self._in_step = offset is not None and -limit <= offset <= limit
        if self._in_step and skew <= limit:
            return (device_ts if self._use_device else received), device_ts
        self.counted["clock_skew"] = self.counted.get("clock_skew", 0) + 1
        return received, device_ts

    def stamp_all(self, device_times: Sequence[float | None], received: float) -> list[float]:
        """`stamp` for each of `device_times` in order (the readings of one message, all
        received at `received`): the source_ts of each; the clock ends in the same state and
        counts the same as after one `stamp` per reading, and is judged again only where
        `stamp` would. A batched payload's hot path (see `_all_in_step`)."""
        out = self._all_in_step(device_times, received) if len(device_times) > 4 else None
        if out is None:
            out = []
            self._stamp_each(device_times, received, out)
        return out

    def _all_in_step(self, device_times: Sequence[float | None],
                     received: float) -> list[float] | None:
        """The common batch in bulk: readings all within the limit of a clock judged in step.
        Each agrees with the verdict, and judging again (as `stamp` does when a reading starts
        a new window, or one of the first 8) cannot change it: the verdict holds while at least
        two recent skews are not below the limit and at most one is above (or the only one is
        within), and adding a skew within the limit, or putting one in the place of any other,
        keeps that true. So only the ring is written (its last 32 readings). None (nothing
        changed) when the batch is otherwise."""
        seen, n = self._seen, len(device_times)
        if not self._in_step or not n:
            return None
        times = cast("Sequence[float]", device_times)  # until a None shows (TypeError)
        try:  # in C, no skew per reading: min(d) - r is min(d - r), rounding is monotonic
            lo, hi, total = min(times) - received, max(times) - received, sum(times)
        except TypeError:  # a reading without device time
            return None
        limit = self.max_skew_seconds
        if not (-limit <= lo and hi <= limit and _LOW < total < _HIGH):
            return None  # one beyond the limit (or a NaN, which the sum shows)
        recent = self._recent
        for i in range(max(0, n - _WINDOW), n):  # only the ring's last readings need a skew
            recent[(seen + i) & _MASK] = times[i] - received
        self._seen = seen + n
        return list(times) if self._use_device else [received] * n

    def _stamp_each(self, device_times: Sequence[float | None], received: float,
                    out: list[float]) -> None:
        """`stamp` for each reading, appending each source_ts to `out` (inlined: no call)."""
        append = out.append
        recent = self._recent
        limit = self.max_skew_seconds
        use_device = self._use_device
        seen = self._seen
        for device_ts in device_times:
            if device_ts is None:
                append(received)
                continue
            skew = device_ts - received
            recent[seen & _MASK] = skew
            seen += 1
            inside = -limit <= skew <= limit
            if inside is not self._in_step or seen <= _EARLY or not (seen - 1) & _MASK:
                self._seen = seen  # `_offset` reads how full the ring is
                offset = self._offset()
                self._in_step = offset is not None and -limit <= offset <= limit
            if self._in_step and skew <= limit:
                append(device_ts if use_device else received)
            else:
                self.counted["clock_skew"] = self.counted.get("clock_skew", 0) + 1
                append(received)
        self._seen = seen

    def _offset(self) -> float | None:
        """The second largest of the recent skews (see the class docstring)."""
        seen = min(self._seen, _WINDOW)
        if not seen:
            return None
        if seen == 1:
            return self._recent[0]
        return sorted(self._recent[:seen])[-2]

    def localize(self, naive: datetime, received: float) -> float | None:
        """Epoch seconds of a device time given without zone or offset, read in the configured
        time zone; None (counted, and named in health) when no time zone is configured.

        Local times that happen twice (the hour the clocks go back) or never (the hour they go
        forward) are read with the offset that puts them nearest to the receive time: right for
        a live device, and the same answer for the same inputs every time.
        """
        if self.zone is None:
            self.counted["timestamp_without_zone"] = (
                self.counted.get("timestamp_without_zone", 0) + 1)
            return None
        first = naive.replace(tzinfo=self.zone, fold=0).timestamp()
        second = naive.replace(tzinfo=self.zone, fold=1).timestamp()
        if first == second:
            return first
        return first if abs(first - received) <= abs(second - received) else second

    @property
    def skew_seconds(self) -> float | None:
        """The device clock's estimated offset from ours (device minus gateway, seconds; from
        recent readings, see the class docstring); None before any device time."""
        return self._offset()

    @property
    def note(self) -> str:
        """What an admin should know, in words; empty while all is well."""
        parts: list[str] = []
        skew = self.skew_seconds
        if skew is not None and abs(skew) > self.max_skew_seconds:
            text = f"clock is {skew_words(skew)}"
            if skew < 0:
                text += " (or its messages arrive that late)"
            parts.append(f"{text}: evaluated on receive time")
        if self.counted.get("timestamp_without_zone"):
            parts.append(f"timestamps carry no time zone: set timezone = \"<IANA name>\" for "
                         f"source {self.source} (until then they are evaluated on receive "
                         "time)")
        return "; ".join(parts)

    def annotate(self, health: SourceHealth) -> SourceHealth:
        """`health` with this clock's skew, note and counts (the note also ends the detail)."""
        note = self.note
        detail = f"{health.detail}; {note}" if note and health.detail else note or health.detail
        return dataclasses.replace(health, detail=detail, clock_skew_seconds=self.skew_seconds,
                                   clock_note=note, counted=dict(self.counted))
