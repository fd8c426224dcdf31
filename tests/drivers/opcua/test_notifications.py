"""Publish responses decoded into rows (drivers/opcua/notifications.py), held against asyncua's
own decoder on the same bytes, and against OPC UA Part 6 where asyncua reads it otherwise."""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary, variant_to_binary
from asyncua.ua.uaerrors import UaStatusCodeError

from drivers.opcua import notifications
from drivers.opcua.convert import epoch_of
from drivers.opcua.notifications import DataChanges, decode_publish_response, seconds_of
from simulators.opcua_plant import NAMESPACE_URI
from tests.drivers.opcua.support import SimFactory, plant_config, running
from tests.harness import wait_for

T = dt.datetime(2026, 12, 6, 4, 5, 6, 789012, tzinfo=dt.UTC)
VALUES = [
    ua.Variant(1.5), ua.Variant(-3, ua.VariantType.SByte), ua.Variant(200, ua.VariantType.Byte),
    ua.Variant(-300, ua.VariantType.Int16), ua.Variant(60000, ua.VariantType.UInt16),
    ua.Variant(-7, ua.VariantType.Int32), ua.Variant(4_000_000_000, ua.VariantType.UInt32),
    ua.Variant(-2**40, ua.VariantType.Int64), ua.Variant(2**63, ua.VariantType.UInt64),
    ua.Variant(2.5, ua.VariantType.Float), ua.Variant(True), ua.Variant(False),
    ua.Variant(float("nan")), ua.Variant("text"), ua.Variant([1.0, 2.0]),
    ua.Variant([[1, 2], [3, 4]], ua.VariantType.Int32), ua.Variant(None), ua.Variant(T),
    ua.Variant(b"\x00\x01", ua.VariantType.ByteString),
]
STATUSES = [0, 0x808B0000, 0x40920000, 0x00960480]  # good, bad, uncertain, good + overflow


def _item(i: int) -> ua.MonitoredItemNotification:
    if i % 17 == 0:  # nothing set: no value, no status, no times
        return ua.MonitoredItemNotification(ClientHandle=i, Value=ua.DataValue())
    source = T + dt.timedelta(microseconds=i) if i % 3 else None
    dv = ua.DataValue(VALUES[i % len(VALUES)], SourceTimestamp=source,  # type: ignore[arg-type]
                      ServerTimestamp=T if i % 2 else None)  # type: ignore[arg-type]
    dv.StatusCode = ua.StatusCode(ua.UInt32(STATUSES[i % len(STATUSES)]))
    return ua.MonitoredItemNotification(ClientHandle=i, Value=dv)


def _response(data: list[Any]) -> bytes:
    resp = ua.PublishResponse()
    resp.ResponseHeader.RequestHandle = 77
    resp.Parameters.SubscriptionId = 9
    resp.Parameters.AvailableSequenceNumbers = [3, 4]
    resp.Parameters.MoreNotifications = False
    resp.Parameters.NotificationMessage.SequenceNumber = 4
    resp.Parameters.NotificationMessage.PublishTime = T
    resp.Parameters.NotificationMessage.NotificationData = data
    resp.Parameters.Results = [ua.StatusCode(ua.UInt32(0)), ua.StatusCode(ua.UInt32(0x80790000))]
    return struct_to_binary(resp)


def _as_rows(note: ua.DataChangeNotification) -> list[tuple[Any, ...]]:
    """What asyncua's objects say, in the rows' terms."""
    rows = []
    for it in note.MonitoredItems:
        dv = it.Value
        rows.append((it.ClientHandle, dv.Value.Value if dv.Value is not None else None,
                     dv.StatusCode.value if dv.StatusCode is not None else 0,
                     epoch_of(dv.SourceTimestamp), epoch_of(dv.ServerTimestamp)))
    return rows


def _same(a: Any, b: Any) -> bool:
    return bool(a == b or (a != a and b != b))  # NaN is itself here


def test_a_response_reads_as_asyncua_reads_it() -> None:
    status = ua.StatusChangeNotification(Status=ua.StatusCode(ua.UInt32(0x80280000)))
    events = ua.EventNotificationList(Events=[ua.EventFieldList(ClientHandle=5,
                                                                EventFields=[ua.Variant(1)])])
    first = ua.DataChangeNotification(MonitoredItems=[_item(i) for i in range(300)])
    second = ua.DataChangeNotification(MonitoredItems=[_item(i) for i in range(300, 320)])
    raw = _response([first, status, events, second])
    ref = struct_from_binary(ua.PublishResponse, Buffer(raw))
    got = decode_publish_response(Buffer(raw))

    assert got.TypeId == ref.TypeId and got.ResponseHeader == ref.ResponseHeader
    ours, theirs = got.Parameters, ref.Parameters
    for name in ("SubscriptionId", "AvailableSequenceNumbers", "MoreNotifications", "Results",
                 "DiagnosticInfos"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.NotificationMessage.SequenceNumber == 4
    assert ours.NotificationMessage.PublishTime == theirs.NotificationMessage.PublishTime == T
    a, b, c, d = ours.NotificationMessage.NotificationData
    assert (b, c) == tuple(theirs.NotificationMessage.NotificationData[1:3])
    for rows, note in ((a, first), (d, second)):
        assert isinstance(rows, DataChanges)
        expected = _as_rows(note)
        assert len(rows.rows) == len(expected)
        for row, want in zip(rows.rows, expected, strict=True):
            assert all(_same(x, y) for x, y in zip(row, want, strict=True)), (row, want)


def test_a_keep_alive_has_no_notifications() -> None:
    got = decode_publish_response(Buffer(_response([])))
    assert got.Parameters.NotificationMessage.NotificationData == []
    assert got.Parameters.SubscriptionId == 9


@pytest.mark.parametrize("ticks", [-5, 0, 1, 9, 10, 11, 116444736000000000,
                                   134_000_000_000_123_456, ua.uatypes.MAX_OPC_FILETIME - 1,
                                   ua.uatypes.MAX_OPC_FILETIME, 2**63 - 1])
def test_times_are_asyncuas_to_the_microsecond(ticks: int) -> None:
    assert seconds_of(ticks) == epoch_of(ua.win_epoch_to_datetime(ticks))


def _datavalue_bytes(mask: int, *fields: bytes) -> bytes:
    return bytes([mask]) + b"".join(fields)


def test_picoseconds_are_read_in_part_6_order() -> None:
    """Part 6, 5.2.2.17: SourceTimestamp, SourcePicoseconds, ServerTimestamp,
    ServerPicoseconds. node-opcua servers send source picoseconds; asyncua 2.1 then reads the
    server time from the wrong bytes (1601 for a node-opcua peer's, here the year 5320)."""
    source = 134_000_000_000_000_000
    server = source + 5_000_000  # half a second later
    dv = _datavalue_bytes(0x01 | 0x04 | 0x08 | 0x10 | 0x20, variant_to_binary(ua.Variant(4.25)),
                          struct.pack("<qH", source, 477), struct.pack("<qH", server, 9400))
    body = struct.pack("<i", 2) + struct.pack("<I", 1) + dv + struct.pack("<I", 2) + dv
    body += struct.pack("<i", -1)  # DiagnosticInfos: none
    rows = notifications.data_change_rows(body)
    assert rows == [(h, 4.25, 0, seconds_of(source), seconds_of(server)) for h in (1, 2)]
    theirs = struct_from_binary(ua.DataChangeNotification, Buffer(body))
    # what this guards against: asyncua's reading of the same bytes
    assert epoch_of(theirs.MonitoredItems[0].Value.ServerTimestamp) != seconds_of(server)


@pytest.mark.parametrize("cut", [3, 20, 200, -1])
def test_a_cut_response_is_asyncuas_to_judge(cut: int) -> None:
    """Short by a few bytes, or a data change whose items run past their body: never rows
    made up from what is left. asyncua's decoder reads it (or raises) as it always did."""
    raw = _response([ua.DataChangeNotification(MonitoredItems=[_item(i) for i in range(1, 9)])])
    short = raw[:cut] if cut > 0 else raw[:-6]
    try:
        theirs: Any = struct_from_binary(ua.PublishResponse, Buffer(short))
    except Exception as exc:
        with pytest.raises(type(exc)):
            decode_publish_response(Buffer(short))
    else:
        assert decode_publish_response(Buffer(short)) == theirs


def test_a_data_change_whose_items_overrun_their_body_is_refused() -> None:
    item = struct.pack("<I", 1) + _datavalue_bytes(0x01, variant_to_binary(ua.Variant(1.0)))
    with pytest.raises(struct.error):
        notifications.data_change_rows(struct.pack("<i", 3) + item)  # says 3, holds 1


async def test_the_driver_reads_a_subscription_through_the_rows(
        make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the asyncua plant simulator: the rows path carries what the driver delivers."""
    decoded: list[int] = []
    rows_of = notifications.data_change_rows

    def counting(raw: bytes) -> list[notifications.Row]:
        rows = rows_of(raw)
        decoded.append(len(rows))
        return rows

    monkeypatch.setattr(notifications, "data_change_rows", counting)
    sim = await make_sim(scenario="steady")
    async with running(plant_config(sim.endpoint)) as (source, got):
        await wait_for(lambda: len(got.of("pump-1", "vibration")) >= 3, 10, "changes")
        assert sum(decoded) >= len(got.samples) > 0
        assert got.of("fan-1", "running")[-1].value == 1.0
        assert source.health().rejected.get("unknown_handle", 0) == 0


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_a_publish_response_is_split_into_batches_of_the_configured_size(
        make_sim: SimFactory, mode: str) -> None:
    """200 items change together, so one publish response (or one poll cycle) carries 200
    values: the consumer still gets batches of at most `batch_max_samples`."""
    sim = await make_sim(extra_variables=200, extra_interval_ms=50)
    nodes = [{"asset": "load", "signal": f"s{i}", "node_id": f"nsu={NAMESPACE_URI};s=load.{i}",
              "mode": mode, "poll_interval_ms": 100} for i in range(200)]
    sizes: list[int] = []
    async with plant_config(sim.endpoint, nodes, batch_max_samples=7).build() as source:
        async with asyncio.timeout(20):
            async for batch in source.batches():
                sizes.append(len(batch.samples))
                if sum(sizes) >= 1000:
                    break
    assert max(sizes) == 7, sizes[:20]


def _read_response(values: list[ua.DataValue], result: int = 0) -> bytes:
    resp = ua.ReadResponse()
    resp.ResponseHeader.ServiceResult = ua.StatusCode(ua.UInt32(result))
    resp.Results = values
    return struct_to_binary(resp)


def test_a_read_response_reads_as_asyncua_reads_it() -> None:
    values = [_item(i).Value for i in range(300)]
    raw = _read_response(values)
    theirs = struct_from_binary(ua.ReadResponse, Buffer(raw))
    header, rows = notifications.decode_read_response(Buffer(raw))
    assert header == theirs.ResponseHeader
    expected = notifications._as_rows(theirs.Results)
    assert [r[0] for r in rows] == list(range(300))
    for row, want in zip(rows, expected, strict=True):
        assert all(_same(x, y) for x, y in zip(row, want, strict=True)), (row, want)


class _Session:
    """Answers every request with the bytes it was given, as a session's `_send_request`."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    async def _send_request(self, request: Any, timeout: float | None = None) -> Buffer:
        assert isinstance(request, ua.ReadRequest)
        return Buffer(self.answer)


class _Client:
    def __init__(self, answer: bytes) -> None:
        self.uaclient = type("UaClient", (), {"session": _Session(answer)})()


async def test_a_bad_service_result_raises_as_asyncuas_read_does() -> None:
    raw = _read_response([], result=0x800E0000)  # BadTooManyOperations
    with pytest.raises(UaStatusCodeError) as raised:
        await notifications.read_rows(_Client(raw), ua.ReadParameters())  # type: ignore[arg-type]
    assert raised.value.code == 0x800E0000
    cut = _read_response([_item(1).Value, _item(2).Value])[:-7]
    with pytest.raises(Exception) as theirs:
        struct_from_binary(ua.ReadResponse, Buffer(cut))
    with pytest.raises(type(theirs.value)):
        await notifications.read_rows(_Client(cut), ua.ReadParameters())  # type: ignore[arg-type]


async def test_the_driver_polls_through_the_rows(make_sim: SimFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[int] = []
    decode = notifications.decode_read_response

    def counting(data: Buffer) -> tuple[ua.ResponseHeader, list[notifications.Row]]:
        header, rows = decode(data)
        read.append(len(rows))
        return header, rows

    monkeypatch.setattr(notifications, "decode_read_response", counting)
    sim = await make_sim(scenario="steady")
    nodes = [{"asset": a, "signal": s, "node_id": f"nsu={NAMESPACE_URI};s={a}.{s}",
              "mode": "poll", "poll_interval_ms": 100}
             for a in ("pump-1", "fan-1") for s in ("vibration", "running")]
    async with running(plant_config(sim.endpoint, nodes)) as (_, got):
        await wait_for(lambda: len(got.of("pump-1", "vibration")) >= 3, 10, "polled reads")
        assert sum(read) >= len(got.samples) > 0
        assert got.of("fan-1", "running")[-1].value == 1.0
        assert all(s.device_ts is not None for s in got.samples)


async def test_without_the_hooks_asyncuas_decoding_still_feeds_the_driver(
        make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An asyncua without the private hooks (or a republished message) hands the pump its own
    DataChangeEvents: the same samples come out of them."""
    from drivers.opcua import session

    monkeypatch.setattr(session, "decode_data_changes", lambda client, sub: False)
    rows_of = notifications.data_change_rows
    decoded: list[int] = []

    def counting(raw: bytes) -> list[notifications.Row]:
        decoded.append(1)
        return rows_of(raw)

    monkeypatch.setattr(notifications, "data_change_rows", counting)
    sim = await make_sim(scenario="steady")
    async with running(plant_config(sim.endpoint)) as (source, got):
        await wait_for(lambda: len(got.of("pump-1", "vibration")) >= 3, 10, "changes")
        vib = got.of("pump-1", "vibration")
        assert all(s.value is not None and 2.2 <= s.value <= 2.8 for s in vib)
        assert all(s.device_ts is not None for s in vib)
        assert got.of("fan-1", "running")[-1].value == 1.0
        assert source.health().rejected.get("unknown_handle", 0) == 0
    assert not decoded
