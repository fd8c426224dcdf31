"""OPC UA DataValues to Samples: status code to quality, timestamps, values to floats."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from asyncua import ua

from gateway.model import Quality, Sample
from gateway.timebase import SourceClock

_SEVERITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)
OVERFLOW_BITS = 0x0480  # InfoType DataValue + Overflow: the server's item queue dropped values


def server_overflowed(dv: ua.DataValue | None) -> bool:
    """The server dropped values of this item (its queue was full) before this one."""
    code = dv.StatusCode.value if dv is not None and dv.StatusCode is not None else 0
    return code & OVERFLOW_BITS == OVERFLOW_BITS


def quality_of(code: int) -> Quality:
    """The two severity bits of an OPC UA status code: 00 good, 01 uncertain, 1x bad."""
    return _SEVERITY[(code >> 30) & 0x3]


def status_name(code: int) -> str:
    """`BadSensorFailure` for 0x808B0000; hex when the code is not a known one."""
    name = ua.status_codes.code_to_name_doc.get(code & 0xFFFF0000)
    return name[0] if name else f"0x{code:08X}"


def epoch_of(ts: dt.datetime | None) -> float | None:
    """A datetime asyncua decoded, as epoch seconds."""
    if ts is None:
        return None
    if ts.tzinfo is None:  # OPC UA times are UTC; a naive datetime must not be read as local
        ts = ts.replace(tzinfo=dt.UTC)
    return ts.timestamp()


class NotNumeric(ValueError):
    """A good value that is neither a number nor a boolean: counted and logged, not passed on."""


def as_float(value: Any) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    raise NotNumeric(f"{type(value).__name__} value is not a number")


@dataclass(frozen=True, slots=True)
class Binding:
    """One configured node once resolved on the server: where its samples go."""

    asset: str
    signal: str
    node_id: ua.NodeId
    handle: int


_UNSET = SourceClock("?")  # rules see receive time; for callers without a source's clock


# Sample is a NamedTuple (gateway/model.py): as cheap to build as a tuple, no helper needed.
new_sample = Sample
_BAD = Quality.BAD


# A DataValue taken apart: (client handle or index, value, status code, source time, server
# time), times in epoch seconds or None. drivers/opcua/notifications.py decodes them from the
# wire; `row_of` takes one from what asyncua decoded.
Row = tuple[int, Any, int, float | None, float | None]


def row_of(handle: int, dv: ua.DataValue | None) -> Row:
    """The row of a DataValue asyncua decoded (None: no DataValue, a bad sample)."""
    if dv is None:
        return handle, None, 0, None, None
    status, variant = dv.StatusCode, dv.Value
    return (handle, variant.Value if variant is not None else None,
            status.value if status is not None else 0,
            epoch_of(dv.SourceTimestamp), epoch_of(dv.ServerTimestamp))


def to_sample(binding: Binding, dv: ua.DataValue | None, received: float,
              clock: SourceClock = _UNSET) -> Sample:
    """Bad status gives value None. The device time is SourceTimestamp, else ServerTimestamp,
    else none; `clock` decides what rules see (`received`, on the gateway clock, unless the
    source trusts its device time and the clock is within the skew limit)."""
    _, raw, status, source, server = row_of(0, dv)
    return sample_of(binding, raw, status, source or server, received, clock)


def sample_of(binding: Binding, raw: Any, status: int, device: float | None, received: float,
              clock: SourceClock = _UNSET) -> Sample:
    """`to_sample` for a DataValue already taken apart (a `Row`): its value, status code and
    device time."""
    quality = _SEVERITY[(status >> 30) & 0x3]
    source_ts, device_ts = clock.stamp(device, received)
    if quality is _BAD or raw is None:
        return new_sample(binding.asset, binding.signal, None, _BAD, source_ts, device_ts)
    # a float is by far the usual value: no isinstance chain for it
    value = raw if type(raw) is float else as_float(raw)
    return new_sample(binding.asset, binding.signal, value, quality, source_ts, device_ts)
