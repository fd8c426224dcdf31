"""Payload bytes -> samples, or named rejections. Pure and synchronous: no paho, no I/O.

A payload may yield some samples and some rejections (an array with one bad element): the good
ones pass, each bad one is counted under its reason. NaN, infinities and strings never become a
sample with a value.

Times: a payload's timestamp is the device's (`Sample.device_ts`); the source's `SourceClock`
decides what rules see (`source_ts`, on the gateway clock) and reads zone-less ISO times in the
configured time zone, or not at all (no silent UTC).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from typing import Any

import orjson

from drivers.mqtt.config import PayloadFormat, PayloadOptions, TimestampUnit
from gateway.model import Quality, Sample
from gateway.timebase import SourceClock


class Reason(enum.StrEnum):
    """Why a message or one element of it was rejected (the keys of SourceHealth.rejected)."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_UTF8 = "not_utf8"
    NOT_A_NUMBER = "not_a_number"
    NAN = "nan"
    INFINITE = "infinite"
    NO_VALUE = "no_value"  # value_path not found in the object
    NO_ASSET = "no_asset"
    NO_SIGNAL = "no_signal"
    BAD_TIMESTAMP = "bad_timestamp"
    NOT_AN_OBJECT = "not_an_object"  # json_fields payload that is not an object
    NO_MAPPING = "no_mapping"  # topic matches no route
    BAD_TOPIC = "bad_topic"  # topic is not valid UTF-8
    RETAINED = "retained"  # a retained message, and the source is told to ignore them
    INTERNAL_ERROR = "internal_error"  # a bug in decoding: counted, never crashes the source


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason.value, detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Decoded:
    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejected] = field(default_factory=list)


_MISSING = object()
_QUALITY_WORDS = {"good": Quality.GOOD, "ok": Quality.GOOD, "uncertain": Quality.UNCERTAIN,
                  "bad": Quality.BAD}
_UNIT_DIVISOR = {TimestampUnit.SECONDS: 1, TimestampUnit.MILLISECONDS: 1_000,
                 TimestampUnit.MICROSECONDS: 1_000_000, TimestampUnit.NANOSECONDS: 1_000_000_000}
_MAX_TS = 1e10  # year 2286: anything later is a unit mistake
_BAD = Quality.BAD
_GOOD = Quality.GOOD
_LOW, _HIGH = -math.inf, math.inf  # a float strictly between is finite (NaN is not)
_QUALITY_TEXT = {**_QUALITY_WORDS, **{w.upper(): q for w, q in _QUALITY_WORDS.items()}}
_new_tuple = tuple.__new__
_FLOATS = {float}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_number(raw: object) -> float | None:
    """A JSON scalar or text as a finite float; None stays None (bad quality). Raises Rejected."""
    if type(raw) is float and _LOW < raw < _HIGH:  # the hot path: a JSON number, already a float
        return raw
    if raw is None:
        return None
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:
            raise Rejected(Reason.INFINITE, _short(raw)) from None
    elif isinstance(raw, str):
        text = raw.strip()
        if text.lower() in ("true", "false"):
            return 1.0 if text.lower() == "true" else 0.0
        try:
            value = float(text)
        except ValueError:
            raise Rejected(Reason.NOT_A_NUMBER, _short(raw)) from None
    else:
        raise Rejected(Reason.NOT_A_NUMBER, _short(raw))
    if math.isnan(value):
        raise Rejected(Reason.NAN, _short(raw))
    if math.isinf(value):
        raise Rejected(Reason.INFINITE, _short(raw))
    return value


def to_timestamp(raw: object, unit: TimestampUnit) -> float | datetime:
    """Epoch seconds from a number (unit or magnitude) or an ISO 8601 text with a zone or
    offset; an ISO text without one comes back as a naive datetime, for the source's time zone
    (see `SourceClock.localize`): only the source's config can say where its clock is."""
    number: float | None = None
    kind = type(raw)
    if kind is float or kind is int or (isinstance(raw, int | float)
                                        and not isinstance(raw, bool)):
        number = float(raw)  # type: ignore[arg-type]
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(raw.strip())
            except ValueError:
                raise Rejected(Reason.BAD_TIMESTAMP, _short(raw)) from None
            if parsed.tzinfo is None:
                if not 1970 <= parsed.year < 2286:  # the range numbers are held to (_MAX_TS)
                    raise Rejected(Reason.BAD_TIMESTAMP, _short(raw)) from None
                return parsed
            number = parsed.timestamp()
            unit = TimestampUnit.SECONDS
    else:
        raise Rejected(Reason.BAD_TIMESTAMP, _short(raw))
    if not math.isfinite(number):
        raise Rejected(Reason.BAD_TIMESTAMP, _short(raw))
    if unit is TimestampUnit.AUTO:
        magnitude = abs(number)
        unit = (TimestampUnit.NANOSECONDS if magnitude >= 1e17 else TimestampUnit.MICROSECONDS
                if magnitude >= 1e14 else TimestampUnit.MILLISECONDS if magnitude >= 1e11
                else TimestampUnit.SECONDS)
    seconds = number / _UNIT_DIVISOR[unit]
    if not 0 < seconds < _MAX_TS:
        raise Rejected(Reason.BAD_TIMESTAMP, _short(raw))
    return seconds


def to_quality(raw: object) -> Quality:
    """`good`/`ok`, `uncertain`, `bad`, booleans, or 0/1/2; anything else is UNCERTAIN."""
    if isinstance(raw, bool):
        return Quality.GOOD if raw else Quality.BAD
    if isinstance(raw, str):
        return _QUALITY_WORDS.get(raw.strip().lower(), Quality.UNCERTAIN)
    if isinstance(raw, int) and raw in (0, 1, 2):
        return Quality(raw)
    return Quality.UNCERTAIN


def _path(spec: str | None) -> tuple[str, ...] | None:
    return None if spec is None else tuple(spec.split("."))


def _get(obj: object, path: tuple[str, ...]) -> object:
    if len(path) == 1 and type(obj) is dict:  # the hot path: a top-level key of an object
        return obj.get(path[0], _MISSING)
    for key in path:
        if isinstance(obj, dict):
            obj = obj.get(key, _MISSING)
        elif isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        else:
            return _MISSING
        if obj is _MISSING:
            return _MISSING
    return obj


def _name(raw: object, missing: Reason) -> str:
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    raise Rejected(missing, "" if raw is _MISSING else _short(raw))


class PayloadDecoder:
    """Decodes one route's payloads according to its `PayloadOptions`."""

    def __init__(self, options: PayloadOptions, clock: SourceClock | None = None) -> None:
        self.format = options.format
        self._clock = clock if clock is not None else SourceClock("?")
        self._value = _path(options.value_path) or ()
        self._ts = _path(options.timestamp_path)
        self._unit = options.timestamp_unit
        self._quality = _path(options.quality_path)
        self._asset = _path(options.asset_path)
        self._signal = _path(options.signal_path)
        self._fields = _path(options.fields_path)
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
        self._float_seconds = _UNIT_DIVISOR.get(self._unit, 1) == 1  # AUTO too, in range
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

    def _plain_readings(self, items: list[Any], asset: str, signal: str, received_at: float,
                        out: Decoded) -> bool:
        """The common batch in bulk: objects, each with a finite float value and (when a time
        is configured) a float time of epoch seconds in range; False, having changed nothing,
        when any reading is otherwise (`_readings` then decodes it one reading at a time)."""
        vkey, tkey = self._keys[0], self._keys[1]
        try:
            values = [item[vkey] for item in items]
            times = [item[tkey] for item in items] if tkey is not None else None
        except (KeyError, TypeError):  # a reading with no value or time, or no object
            return False
        if set(map(type, values)) != _FLOATS or not _LOW < sum(values) < _HIGH:
            return False  # ints, texts, nulls, or a NaN or infinity (a sum shows them all)
        if times is None:
            stamps: Iterable[float] = repeat(received_at)
            device: Iterable[float | None] = repeat(None)
        else:
            if (set(map(type, times)) != _FLOATS or not self._float_seconds
                    or not 0 < min(times) <= max(times) < _MAX_TS
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
        divisor = _UNIT_DIVISOR.get(self._unit)  # None: AUTO, judged per number
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
                    raw = item.get(vkey, _MISSING) if vkey is not None else _get(item, vpath)
                    if raw is _MISSING:
                        raise Rejected(Reason.NO_VALUE, ".".join(vpath))
                    if tpath:
                        raw_ts = item.get(tkey) if tkey is not None else _get(item, tpath)
                        if type(raw_ts) is float and as_is and 0 < raw_ts < _MAX_TS:
                            dev = raw_ts  # epoch seconds already: the common case, inline
                        elif raw_ts is not None and raw_ts is not _MISSING:
                            dev = self._epoch(raw_ts, divisor, received_at)
                except Rejected as exc:
                    rejections.append(exc)
                    continue
                if qpath:
                    raw_q = item.get(qkey, _MISSING) if qkey is not None else _get(item, qpath)
                    if raw_q is not _MISSING:
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
            if 0 < seconds < _MAX_TS:
                return seconds
        got = to_timestamp(raw, self._unit)  # the rest, and every error
        return got if type(got) is float else self._clock.localize(got, received_at)  # type: ignore[arg-type]

    def _fields_item(self, item: Any, asset: str | None, received_at: float,
                     out: Decoded) -> None:
        if not isinstance(item, dict):
            raise Rejected(Reason.NOT_AN_OBJECT, _short(item))
        (source_ts, device_ts), quality = self._meta_of(item, received_at)
        if self._asset is not None:
            asset = self._named(item, self._asset, asset, Reason.NO_ASSET)
        fields = item if self._fields is None else _get(item, self._fields)
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
            raw_ts = _get(item, self._ts)
            if raw_ts is not _MISSING and raw_ts is not None:
                got = to_timestamp(raw_ts, self._unit)
                device_ts = (got if type(got) is float
                             else self._clock.localize(got, received_at))  # type: ignore[arg-type]
        quality = Quality.GOOD
        if self._quality is not None:
            raw_q = _get(item, self._quality)
            if raw_q is not _MISSING:
                quality = to_quality(raw_q)
        return self._clock.stamp(device_ts, received_at), quality

    @staticmethod
    def _named(item: dict[str, Any], path: tuple[str, ...], fallback: str | None,
               missing: Reason) -> str:
        raw = _get(item, path)
        if raw is _MISSING and fallback is not None:
            return fallback
        return _name(raw, missing)

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
