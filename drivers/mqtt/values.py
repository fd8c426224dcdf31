"""One JSON value at a time -> a typed value, or a named rejection (`Reason`, `Rejected`).

The scalar rules the MQTT codec (drivers/mqtt/codec.py) applies to each reading: numbers
(NaN, infinities and text never become a value), device timestamps (epoch numbers in any unit,
ISO 8601 with or without a zone), quality words, and dotted paths into a JSON object. Pure and
synchronous; split from the codec so that each stays small.
"""

from __future__ import annotations

import enum
import math
from datetime import datetime

from drivers.mqtt.config import TimestampUnit
from gateway.model import Quality


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


MISSING = object()
QUALITY_WORDS = {"good": Quality.GOOD, "ok": Quality.GOOD, "uncertain": Quality.UNCERTAIN,
                  "bad": Quality.BAD}
UNIT_DIVISOR = {TimestampUnit.SECONDS: 1, TimestampUnit.MILLISECONDS: 1_000,
                 TimestampUnit.MICROSECONDS: 1_000_000, TimestampUnit.NANOSECONDS: 1_000_000_000}
MAX_TS = 1e10  # year 2286: anything later is a unit mistake
_LOW, _HIGH = -math.inf, math.inf  # a float strictly between is finite (NaN is not)


def short(value: object) -> str:
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
            raise Rejected(Reason.INFINITE, short(raw)) from None
    elif isinstance(raw, str):
        text = raw.strip()
        if text.lower() in ("true", "false"):
            return 1.0 if text.lower() == "true" else 0.0
        try:
            value = float(text)
        except ValueError:
            raise Rejected(Reason.NOT_A_NUMBER, short(raw)) from None
    else:
        raise Rejected(Reason.NOT_A_NUMBER, short(raw))
    if math.isnan(value):
        raise Rejected(Reason.NAN, short(raw))
    if math.isinf(value):
        raise Rejected(Reason.INFINITE, short(raw))
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
                raise Rejected(Reason.BAD_TIMESTAMP, short(raw)) from None
            if parsed.tzinfo is None:
                if not 1970 <= parsed.year < 2286:  # the range numbers are held to (MAX_TS)
                    raise Rejected(Reason.BAD_TIMESTAMP, short(raw)) from None
                return parsed
            number = parsed.timestamp()
            unit = TimestampUnit.SECONDS
    else:
        raise Rejected(Reason.BAD_TIMESTAMP, short(raw))
    if not math.isfinite(number):
        raise Rejected(Reason.BAD_TIMESTAMP, short(raw))
    if unit is TimestampUnit.AUTO:
        magnitude = abs(number)
        unit = (TimestampUnit.NANOSECONDS if magnitude >= 1e17 else TimestampUnit.MICROSECONDS
                if magnitude >= 1e14 else TimestampUnit.MILLISECONDS if magnitude >= 1e11
                else TimestampUnit.SECONDS)
    seconds = number / UNIT_DIVISOR[unit]
    if not 0 < seconds < MAX_TS:
        raise Rejected(Reason.BAD_TIMESTAMP, short(raw))
    return seconds


def to_quality(raw: object) -> Quality:
    """`good`/`ok`, `uncertain`, `bad`, booleans, or 0/1/2; anything else is UNCERTAIN."""
    if isinstance(raw, bool):
        return Quality.GOOD if raw else Quality.BAD
    if isinstance(raw, str):
        return QUALITY_WORDS.get(raw.strip().lower(), Quality.UNCERTAIN)
    if isinstance(raw, int) and raw in (0, 1, 2):
        return Quality(raw)
    return Quality.UNCERTAIN


def parse_path(spec: str | None) -> tuple[str, ...] | None:
    return None if spec is None else tuple(spec.split("."))


def get_path(obj: object, path: tuple[str, ...]) -> object:
    if len(path) == 1 and type(obj) is dict:  # the hot path: a top-level key of an object
        return obj.get(path[0], MISSING)
    for key in path:
        if isinstance(obj, dict):
            obj = obj.get(key, MISSING)
        elif isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        else:
            return MISSING
        if obj is MISSING:
            return MISSING
    return obj


def name_of(raw: object, missing: Reason) -> str:
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    raise Rejected(missing, "" if raw is MISSING else short(raw))
