"""Payload bytes -> samples, or named rejections. Pure and synchronous: no paho, no I/O.

A payload may yield some samples and some rejections (an array with one bad element): the good
ones pass, each bad one is counted under its reason. NaN, infinities and strings never become a
sample with a value.

Times: a payload's timestamp is the device's (`Sample.device_ts`); the source's `SourceClock`
decides what rules see (`source_ts`, on the gateway clock) and reads zone-less ISO times in the
configured time zone, or not at all (no silent UTC).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import orjson

from drivers.mqtt.config import PayloadFormat, PayloadOptions
from drivers.mqtt.values import (
    MAX_TS,
    MISSING,
    QUALITY_WORDS,
    UNIT_DIVISOR,
    Reason,
    Rejected,
    get_path,
    name_of,
    parse_path,
    short,
    to_number,
    to_quality,
    to_timestamp,
)
from gateway.model import Quality, Sample
from gateway.timebase import SourceClock

__all__ = ["Decoded", "PayloadDecoder", "Reason", "Rejected", "to_number", "to_quality",
           "to_timestamp"]


@dataclass(slots=True)
class Decoded:
    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejected] = field(default_factory=list)


_BAD = Quality.BAD
_GOOD = Quality.GOOD
_LOW, _HIGH = -math.inf, math.inf  # a float strictly between is finite (NaN is not)
_QUALITY_TEXT = {**QUALITY_WORDS, **{w.upper(): q for w, q in QUALITY_WORDS.items()}}
_new_tuple = tuple.__new__
_FLOATS = {float}


class PayloadDecoder:
    """Decodes one route's payloads according to its `PayloadOptions`."""

    def __init__(self, options: PayloadOptions, clock: SourceClock | None = None) -> None:
        self.format = options.format
        self._clock = clock if clock is not None else SourceClock("?")
        self._value = parse_path(options.value_path) or ()
        self._ts = parse_path(options.timestamp_path)
        self._unit = options.timestamp_unit
        self._quality = parse_path(options.quality_path)
        self._asset = parse_path(options.asset_path)
        self._signal = parse_path(options.signal_path)
        self._fields = parse_path(options.fields_path)
        self._only = frozenset(options.fields) if options.fields is not None else None
        # The top-level key of each of value, timestamp and quality path (None: nested).
        self._keys = tuple(p[0] if p is not None and len(p) == 1 else None
                           for p in (self._value, self._ts, self._quality))
        # Readings named by the topic, a top-level value and perhaps a top-level time: the
        # shape most batched payloads have, and `_plain_readings` decodes it in bulk.
        self._plain = (self.format is PayloadFormat.JSON and self._keys[0] is not None
                       and (self._ts is None or self._keys[1] is not None)
                       and self._quality is None and self._asset is None
                       and self._signal is None)
        self._float_seconds = UNIT_DIVISOR.get(self._unit, 1) == 1  # AUTO too, in range
        # `_plain_readings` takes the value and the time of each object in C (map).
        vkey, tkey = self._keys[0], self._keys[1]
        self._take_value: Callable[[Any], Any] = itemgetter(vkey or "value")
        self._take_time: Callable[[Any], Any] | None = itemgetter(tkey) if tkey else None
        # Top-level keys that describe the sample rather than being signals (json_fields).
        self._meta = frozenset(p[0] for p in (self._ts, self._quality, self._asset) if p)

    def decode(self, payload: bytes | bytearray, asset: str | None, signal: str | None,
               received_at: float) -> Decoded:
        out = Decoded()
        try:
            if not payload.strip():
                raise Rejected(Reason.EMPTY)
            if self.format is PayloadFormat.VALUE:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    raise Rejected(Reason.NOT_UTF8) from None
                out.samples.append(self._sample(asset, signal, to_number(text), Quality.GOOD,
                                                received_at))
                return out
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                doc = _lenient_loads(payload, exc)
            if type(doc) is dict and self._plain and asset and signal \
                    and self._one_reading(doc, asset, signal, received_at, out):
                return out  # one plain reading per message: the common shape, no columns
            items = doc if isinstance(doc, list) else [doc]
            if not items:
                raise Rejected(Reason.EMPTY, "empty array")
            if self.format is PayloadFormat.JSON:
                if not (self._plain and asset and signal and len(items) > 1
                        and self._plain_readings(items, asset, signal, received_at, out)):
                    self._readings(items, asset, signal, received_at, out)
                return out
            for item in items:
                try:
                    self._fields_item(item, asset, received_at, out)
                except Rejected as exc:
                    out.rejections.append(exc)
        except Rejected as exc:
            out.rejections.append(exc)
        return out

    def _one_reading(self, item: dict[str, Any], asset: str, signal: str, received_at: float,
                     out: Decoded) -> bool:
        """One object with a finite float value and (when a time is configured) a float time of
        epoch seconds in range: its sample; False, having changed nothing, when it is otherwise
        (`_readings` then decodes it, with every check and reason)."""
        value = item.get(self._keys[0])  # type: ignore[arg-type]  # `_plain`: a top-level key
        if type(value) is not float or not _LOW < value < _HIGH:
            return False
        device: float | None = None
        tkey = self._keys[1]
        if tkey is not None:
            device = item.get(tkey)
            if type(device) is not float or not self._float_seconds or not 0 < device < MAX_TS:
                return False
        source_ts, device_ts = self._clock.stamp(device, received_at)
        out.samples.append(_new_tuple(Sample, (asset, signal, value, _GOOD, source_ts,
                                               device_ts)))
        return True

    def _plain_readings(self, items: list[Any], asset: str, signal: str, received_at: float,
                        out: Decoded) -> bool:
        """The common batch in bulk: objects, each with a finite float value and (when a time
        is configured) a float time of epoch seconds in range; False, having changed nothing,
        when any reading is otherwise (`_readings` then decodes it one reading at a time).

        No Python bytecode runs per reading: the fields are taken with `itemgetter` mapped over
        the objects, checked with `set(map(type, ...))`, `min`, `max` and `sum` (a NaN or an
        infinity makes the sum one), stamped by the clock in one call and zipped into samples."""
        take_time = self._take_time
        try:  # one pass per field: an itemgetter of one key makes no tuple per object
            values = list(map(self._take_value, items))
            times = list(map(take_time, items)) if take_time is not None else None
        except (KeyError, TypeError):  # a reading with no value or time, or no object
            return False
        if set(map(type, values)) != _FLOATS or not _LOW < sum(values) < _HIGH:
            return False  # ints, texts, nulls, or a NaN or infinity (a sum shows them all)
        if times is None:
            stamps: Iterable[float] = repeat(received_at)
            device: Iterable[float | None] = repeat(None)
        else:
            if (set(map(type, times)) != _FLOATS or not self._float_seconds
                    or not 0 < min(times) <= max(times) < MAX_TS
                    or not _LOW < sum(times) < _HIGH):
                return False
            stamps, device = self._clock.stamp_all(times, received_at), times
        rows = zip(repeat(asset), repeat(signal), values, repeat(_GOOD), stamps, device,
                   strict=False)  # endless repeats
        out.samples.extend(map(_new_tuple, repeat(Sample), rows))  # Sample._make, in C
        return True

    def _readings(self, items: list[Any], asset: str | None, signal: str | None,
                  received_at: float, out: Decoded) -> None:
        """The `json` format's hot path: every reading of a payload in one pass into columns,
        their device times stamped by the source clock in one call, then all made into samples
        at once. Checks and reasons are those of one reading at a time, in the same order: no
        value, bad timestamp, (the clock sees the device time), no asset or signal in the
        object, a value that is no number, no asset or signal at all."""
        vkey, tkey, qkey = self._keys
        vpath, tpath, qpath = self._value, self._ts or (), self._quality or ()
        divisor = UNIT_DIVISOR.get(self._unit)  # None: AUTO, judged per number
        as_is = divisor is None or divisor == 1  # a float in range is seconds as it stands
        apath, spath = self._asset, self._signal
        # Names from the payload, or missing ones to reject per reading: a column each;
        # otherwise the topic's two names stand for every reading.
        vary = apath is not None or spath is not None or not asset or not signal
        rejections = out.rejections
        assets: list[str | None] = []
        signals: list[str | None] = []
        values: list[float | None] = []
        quals: list[Quality] = []
        device: list[float | None] = []  # aligned with the columns above
        dropped: list[int] = []  # readings the clock saw but that were rejected afterwards
        for item in items:
            dev: float | None = None
            q = _GOOD
            if type(item) is dict:
                try:
                    raw = item.get(vkey, MISSING) if vkey is not None else get_path(item, vpath)
                    if raw is MISSING:
                        raise Rejected(Reason.NO_VALUE, ".".join(vpath))
                    if tpath:
                        raw_ts = item.get(tkey) if tkey is not None else get_path(item, tpath)
                        if type(raw_ts) is float and as_is and 0 < raw_ts < MAX_TS:
                            dev = raw_ts  # epoch seconds already: the common case, inline
                        elif raw_ts is not None and raw_ts is not MISSING:
                            dev = self._epoch(raw_ts, divisor, received_at)
                except Rejected as exc:
                    rejections.append(exc)
                    continue
                if qpath:
                    raw_q = item.get(qkey, MISSING) if qkey is not None else get_path(item, qpath)
                    if raw_q is not MISSING:
                        q = (_QUALITY_TEXT[raw_q] if type(raw_q) is str and raw_q in _QUALITY_TEXT
                             else to_quality(raw_q))
            else:
                raw = item  # a bare number in an array: the topic's names, no device time
            device.append(dev)
            a, g = asset, signal
            try:
                if type(item) is dict:
                    if apath is not None:
                        a = self._named(item, apath, asset, Reason.NO_ASSET)
                    if spath is not None:
                        g = self._named(item, spath, signal, Reason.NO_SIGNAL)
                v = raw if type(raw) is float and _LOW < raw < _HIGH else to_number(raw)
                if vary:
                    if not a:
                        raise Rejected(Reason.NO_ASSET)
                    if not g:
                        raise Rejected(Reason.NO_SIGNAL)
            except Rejected as exc:
                rejections.append(exc)
                dropped.append(len(values))
                v = None
            if v is None or q is _BAD:
                v, q = None, _BAD
            values.append(v)
            quals.append(q)
            if vary:
                assets.append(a)
                signals.append(g)
        stamps = self._clock.stamp_all(device, received_at)
        if len(values) == 1 and not dropped:  # one reading (a message per sample): no columns
            a, g = (assets[0], signals[0]) if vary else (asset, signal)
            out.samples.append(_new_tuple(Sample, (a, g, values[0], quals[0], stamps[0],
                                                   device[0])))
            return
        columns: list[list[Any]] = [assets, signals] if vary else []
        columns += [values, quals, stamps, device]
        if dropped:
            gone = set(dropped)
            columns = [[x for i, x in enumerate(c) if i not in gone] for c in columns]
        names = [] if vary else [repeat(asset), repeat(signal)]  # endless: strict=False
        rows = zip(*names, *columns, strict=False)
        out.samples.extend(map(_new_tuple, repeat(Sample), rows))  # Sample._make, in C

    def _epoch(self, raw: object, divisor: int | None, received_at: float) -> float | None:
        """A device time in epoch seconds (`to_timestamp`, with the common case inline): a
        JSON number within range needs no more than a division."""
        kind = type(raw)
        if kind is float or kind is int:
            number: float = raw * 1.0  # type: ignore[operator]  # float(raw), as to_timestamp
            if divisor is None:  # by magnitude (a negative number is out of range anyway)
                divisor = (1 if number < 1e11 else 1_000 if number < 1e14 else 1_000_000
                           if number < 1e17 else 1_000_000_000)
            seconds = number / divisor
            if 0 < seconds < MAX_TS:
                return seconds
        got = to_timestamp(raw, self._unit)  # the rest, and every error
        return got if type(got) is float else self._clock.localize(got, received_at)  # type: ignore[arg-type]

    def _fields_item(self, item: Any, asset: str | None, received_at: float,
                     out: Decoded) -> None:
        if not isinstance(item, dict):
            raise Rejected(Reason.NOT_AN_OBJECT, short(item))
        (source_ts, device_ts), quality = self._meta_of(item, received_at)
        if self._asset is not None:
            asset = self._named(item, self._asset, asset, Reason.NO_ASSET)
        fields = item if self._fields is None else get_path(item, self._fields)
        if not isinstance(fields, dict):
            raise Rejected(Reason.NOT_AN_OBJECT, "fields_path")
        skip = self._meta if fields is item else frozenset()
        taken = 0
        for key, raw in fields.items():
            if key in skip or (self._only is not None and key not in self._only):
                continue
            taken += 1
            try:
                out.samples.append(self._sample(asset, key, to_number(raw), quality, source_ts,
                                                device_ts))
            except Rejected as exc:
                out.rejections.append(exc)
        if taken == 0:
            raise Rejected(Reason.EMPTY, "no signal fields")

    def _meta_of(self, item: dict[str, Any],
                 received_at: float) -> tuple[tuple[float, float | None], Quality]:
        """((source_ts, device_ts), quality) of one object: the times are stamped once per
        object, so the fields of a json_fields object share them."""
        device_ts: float | None = None
        if self._ts is not None:
            raw_ts = get_path(item, self._ts)
            if raw_ts is not MISSING and raw_ts is not None:
                got = to_timestamp(raw_ts, self._unit)
                device_ts = (got if type(got) is float
                             else self._clock.localize(got, received_at))  # type: ignore[arg-type]
        quality = Quality.GOOD
        if self._quality is not None:
            raw_q = get_path(item, self._quality)
            if raw_q is not MISSING:
                quality = to_quality(raw_q)
        return self._clock.stamp(device_ts, received_at), quality

    @staticmethod
    def _named(item: dict[str, Any], path: tuple[str, ...], fallback: str | None,
               missing: Reason) -> str:
        raw = get_path(item, path)
        if raw is MISSING and fallback is not None:
            return fallback
        return name_of(raw, missing)

    @staticmethod
    def _sample(asset: str | None, signal: str | None, value: float | None, quality: Quality,
                source_ts: float, device_ts: float | None = None) -> Sample:
        if not asset:
            raise Rejected(Reason.NO_ASSET)
        if not signal:
            raise Rejected(Reason.NO_SIGNAL)
        if value is None or quality is Quality.BAD:
            return Sample(asset, signal, None, Quality.BAD, source_ts, device_ts)
        return Sample(asset, signal, value, quality, source_ts, device_ts)


def _lenient_loads(payload: bytes | bytearray, exc: orjson.JSONDecodeError) -> Any:
    """orjson refused the payload: say why in its own words. Invalid UTF-8 is `not_utf8`.
    NaN and Infinity literals (Python's json.dumps writes them; JSON does not allow them) and
    numbers beyond a double are read again by the standard library, so each such value is
    rejected on its own as `nan` or `infinite` and the rest of the payload still counts.
    Anything else is `malformed_json`. Runs only on the error path."""
    try:
        text = bytes(payload).decode()
    except UnicodeDecodeError as bad:
        raise Rejected(Reason.NOT_UTF8, f"invalid UTF-8 at byte {bad.start}") from None
    token = text[exc.pos:exc.pos + 9].lstrip("-+")
    if token.startswith(("NaN", "Infinity")) or "infinity" in exc.msg:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            pass
    raise Rejected(Reason.MALFORMED_JSON, str(exc)[:80])
