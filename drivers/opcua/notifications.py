"""Publish responses' data changes, and polled reads, decoded straight into rows.

asyncua decodes every MonitoredItemNotification generically: a DataValue, a Variant and two
datetimes built field by field (about 8 µs an item on the 2-core bench box, most of what a busy
subscription costs), which the driver then turns back into a float and epoch seconds. With
`decode_data_changes` a client's session decodes its publish responses here instead: the
envelope (header, sequence numbers, results, any other notification) with asyncua's own
decoders, each DataChangeNotification into `DataChanges` rows, a struct unpack per field. A
variant that is not a scalar number or boolean (a string, an array, a structure) goes through
asyncua's variant decoder in place, so every value reaches the driver as asyncua gives it; a
response this module cannot read is decoded whole by asyncua, as before. `read_rows` does the
same for the DataValues of a Read (polled nodes).

DataValue fields follow OPC UA Part 6, 5.2.2.17: Value, Status, SourceTimestamp,
SourcePicoseconds, ServerTimestamp, ServerPicoseconds. asyncua 2.1 reads ServerTimestamp before
SourcePicoseconds, which misreads a value whose server sends source picoseconds.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.subscription import Subscription
from asyncua.common.utils import Buffer
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.ua_binary import (
    extensionobject_from_binary,
    nodeid_from_binary,
    struct_from_binary,
    variant_from_binary,
)
from asyncua.ua.uaerrors import UaStructParsingError

from drivers.opcua.convert import Row as Row  # the rows this module makes
from drivers.opcua.convert import row_of

log = logging.getLogger(__name__)

_DATA_CHANGE = ObjectIds.DataChangeNotification_Encoding_DefaultBinary
_I32 = struct.Struct("<i")
_HEAD = struct.Struct("<IB")  # ClientHandle, DataValue encoding mask
_U32, _I64 = struct.Struct("<I"), struct.Struct("<q")
# variant type id -> how its scalar is packed: Boolean to Double (Part 6, 5.1.2)
_SCALARS = {kind: struct.Struct(fmt) for kind, fmt in
            enumerate(("<?", "<b", "<B", "<h", "<H", "<i", "<I", "<q", "<Q", "<f", "<d"), 1)}
# a DateTime is 100 ns ticks since 1601-01-01 UTC; asyncua clamps it to [1601, 9999-12-31]
_UNIX_FROM_1601_US = 11_644_473_600 * 10**6
_MAX_TICKS = ua.uatypes.MAX_OPC_FILETIME
_FIRST = ua.uatypes.FILETIME_EPOCH_AS_UTC_DATETIME.timestamp()
_LAST = ua.uatypes.MAX_FILETIME_EPOCH_AS_UTC_DATETIME.timestamp()


def seconds_of(ticks: int) -> float:
    """An OPC UA DateTime as epoch seconds, exactly as asyncua's datetime's `timestamp()`."""
    if ticks < 0:
        return _FIRST
    if ticks >= _MAX_TICKS:
        return _LAST
    return (ticks // 10 - _UNIX_FROM_1601_US) / 10**6


class DataChanges:
    """A DataChangeNotification as rows, in the NotificationData where asyncua would put a
    ua.DataChangeNotification (its DiagnosticInfos, which no server sends unasked, are not read)."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows


def data_change_rows(raw: bytes) -> list[Row]:
    """The MonitoredItems of one encoded DataChangeNotification body."""
    return datavalue_rows(raw, 0, handles=True)[0]


def datavalue_rows(raw: bytes, pos: int, *, handles: bool) -> tuple[list[Row], int]:
    """An encoded array of DataValues at `pos` (each after its UInt32 client handle when
    `handles`, else numbered from 0), and the position after it."""
    (count,) = _I32.unpack_from(raw, pos)
    pos += 4
    rows: list[Row] = []
    add, head, scalars, u32, i64 = rows.append, _HEAD.unpack_from, _SCALARS, _U32, _I64
    for index in range(max(count, 0)):
        if handles:
            handle, mask = head(raw, pos)
            pos += 5
        else:
            handle, mask = index, raw[pos]
            pos += 1
        value: Any = None
        status = 0
        source = server = None
        if mask & 1:
            kind = raw[pos]
            packed = scalars.get(kind)  # None for Null, other types, arrays (bits 6-7 set)
            if packed is not None:
                (value,) = packed.unpack_from(raw, pos + 1)
                pos += 1 + packed.size
            elif kind:
                buf = Buffer(raw, pos)
                value = variant_from_binary(buf).Value
                pos = buf.cur_pos
            else:
                pos += 1
        if mask & 2:
            (status,) = u32.unpack_from(raw, pos)
            pos += 4
        if mask & 4:
            source = seconds_of(i64.unpack_from(raw, pos)[0])
            pos += 8
        if mask & 16:  # SourcePicoseconds: finer than the samples' float seconds
            pos += 2
        if mask & 8:
            server = seconds_of(i64.unpack_from(raw, pos)[0])
            pos += 8
        if mask & 32:
            pos += 2
        add((handle, value, status, source, server))
    if pos > len(raw):
        raise struct.error(f"DataValues end at {len(raw)}, items at {pos}")
    return rows, pos


def _notification(data: Buffer) -> Any:
    """One ExtensionObject of NotificationData: a data change as `DataChanges`, any other as
    asyncua decodes it."""
    probe = data.copy()
    typeid = nodeid_from_binary(probe)
    encoding = probe.read(1)[0]
    if not (typeid.NamespaceIndex == 0 and typeid.Identifier == _DATA_CHANGE and encoding & 1):
        return extensionobject_from_binary(data)
    (length,) = _I32.unpack(probe.read(4))
    if length < 4:
        return extensionobject_from_binary(data)
    body = probe.read(length)
    data.skip(probe.cur_pos - data.cur_pos)
    return DataChanges(data_change_rows(body))


@dataclass
class _ResultHead:
    """PublishResult's fields before its NotificationMessage's NotificationData."""

    SubscriptionId: ua.IntegerId
    AvailableSequenceNumbers: list[ua.Counter]
    MoreNotifications: ua.Boolean
    SequenceNumber: ua.Counter
    PublishTime: ua.UtcTime


@dataclass
class _ResultTail:
    """PublishResult's fields after the NotificationMessage."""

    Results: list[ua.StatusCode]
    DiagnosticInfos: list[ua.DiagnosticInfo]


def decode_publish_response(data: Buffer) -> ua.PublishResponse:
    """A PublishResponse as asyncua decodes it, but with `DataChanges` for its data changes;
    all asyncua's when anything in it is not as expected."""
    start = data.copy()
    try:
        typeid = nodeid_from_binary(data)
        header = struct_from_binary(ua.ResponseHeader, data)
        head = struct_from_binary(_ResultHead, data)
        (count,) = _I32.unpack(data.read(4))
        notes = [_notification(data) for _ in range(max(count, 0))]
        tail = struct_from_binary(_ResultTail, data)
    except Exception as exc:  # asyncua's decoder decides what it was
        log.debug("publish response read by asyncua's decoder: %s", exc)
        return struct_from_binary(ua.PublishResponse, start)
    message = ua.NotificationMessage(SequenceNumber=head.SequenceNumber,
                                     PublishTime=head.PublishTime, NotificationData=notes)
    return ua.PublishResponse(
        TypeId=typeid, ResponseHeader=header,
        Parameters=ua.PublishResult(
            SubscriptionId=head.SubscriptionId,
            AvailableSequenceNumbers=head.AvailableSequenceNumbers,
            MoreNotifications=head.MoreNotifications, NotificationMessage=message,
            Results=tail.Results, DiagnosticInfos=tail.DiagnosticInfos))


def decode_read_response(data: Buffer) -> tuple[ua.ResponseHeader, list[Row]]:
    """A ReadResponse's header and its Results as rows numbered from 0 (DiagnosticInfos, sent
    only when asked for, are not read)."""
    nodeid_from_binary(data)
    header = struct_from_binary(ua.ResponseHeader, data)
    return header, datavalue_rows(data.read(len(data)), 0, handles=False)[0]


def _session_hooks(client: Client) -> tuple[Any, Callable[..., Any] | None]:
    """The client's session and its private `_send_request` (None where this asyncua has
    neither): what both hooks below go through."""
    session = getattr(getattr(client, "uaclient", None), "session", None)
    return session, getattr(session, "_send_request", None)


async def read_rows(client: Client, parameters: ua.ReadParameters) -> list[Row]:
    """The Read service as `client.uaclient.read`, its DataValues as rows numbered in the order
    of `parameters.NodesToRead`. A bad service result raises as asyncua's read does. Where this
    asyncua lacks the hook, or the answer is not as expected, asyncua decodes it."""
    _, send = _session_hooks(client)
    if send is None:
        return _as_rows(await client.uaclient.read(parameters))
    request = ua.ReadRequest()
    request.Parameters = parameters
    data = await send(request)
    start = data.copy()
    try:
        header, rows = decode_read_response(data)
    except Exception as exc:  # asyncua's decoder decides what it was
        log.debug("read response read by asyncua's decoder: %s", exc)
        response = struct_from_binary(ua.ReadResponse, start)
        response.ResponseHeader.ServiceResult.check()
        return _as_rows(response.Results)
    header.ServiceResult.check()
    return rows


def _as_rows(values: Sequence[ua.DataValue]) -> list[Row]:
    return [row_of(index, dv) for index, dv in enumerate(values)]


Explode = Callable[[Iterable[Any]], Iterable[Any]]


def decode_data_changes(client: Client, sub: Subscription) -> bool:
    """Have `client` decode publish responses with `decode_publish_response`, and `sub` hand
    each `DataChanges` to its iterator as one event. Call right after creating `sub`, before its
    monitored items (nothing can arrive before them). False, changing nothing, when this asyncua
    lacks the hooks (then every notification comes as asyncua decodes it)."""
    session, send = _session_hooks(client)
    explode: Explode | None = getattr(sub, "_explode_notifications", None)
    if session is None or send is None or explode is None or not hasattr(session, "publish"):
        return False

    def explode_rows(notifications: Iterable[Any]) -> Iterator[Any]:
        for notification in notifications:
            if type(notification) is DataChanges:
                yield notification
            else:
                yield from explode((notification,))

    async def publish(acks: Sequence[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = list(acks) if acks else []
        data = await send(request, timeout=0)
        try:
            return decode_publish_response(data)
        except Exception as exc:  # as asyncua's publish: the loop skips this response
            log.warning("unreadable publish response from the server: %s", exc)
            raise UaStructParsingError from exc

    setattr(sub, "_explode_notifications", explode_rows)  # noqa: B010 - a private hook
    setattr(session, "publish", publish)  # noqa: B010
    return True
