"""One Modbus connection shared by the devices behind it: one request at a time, our timeouts.

pymodbus's own retries and "close after N silent requests" are off: on a line where one unit
of three is dead, closing the connection would punish the two that answer. Instead each request
gets its device's timeout, and only a run of timeouts with no answer from anyone (a hung
gateway) drops the TCP connection. pymodbus types stay inside this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from drivers.modbus.config import Device, ModbusSourceConfig, Parity, Table, Transport
from gateway.backoff import Backoff

log = logging.getLogger(__name__)
_PARITY = {Parity.NONE: "N", Parity.EVEN: "E", Parity.ODD: "O"}
EXCEPTION_NAMES = {1: "illegal_function", 2: "illegal_address", 3: "illegal_value",
                   4: "device_failure", 5: "acknowledge", 6: "device_busy",
                   8: "memory_parity_error", 10: "gateway_path_unavailable",
                   11: "gateway_target_no_response"}


def quiet_pymodbus() -> None:
    """pymodbus logs a hex dump at ERROR for every timeout; we log link changes ourselves."""
    logger = logging.getLogger("pymodbus.logging")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class ReadError(Exception):
    """A request got no usable answer. `reason` is a short counter key."""

    reason = "error"


class LinkDown(ReadError):
    reason = "link_down"


class NoResponse(ReadError):
    reason = "timeout"


class DeviceException(ReadError):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.reason = f"exception_{EXCEPTION_NAMES.get(code, code)}"
        super().__init__(f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class Link:
    """The connection: connect with backoff, serialise requests, classify failures."""

    def __init__(self, config: ModbusSourceConfig, devices: Sequence[Device]) -> None:
        self._cfg = config
        self._lock = asyncio.Lock()
        self._backoff = Backoff(0.2, config.reconnect_max_seconds)
        self._retry_at = 0.0
        self._silent_run = 0  # timeouts in a row, whoever was asked
        self._silent_limit = max(3, 2 * len(devices))
        longest = max(d.timeout_seconds for d in devices)
        self._client = self._make_client(max(longest, config.connect_timeout_seconds) + 1.0)
        self._where = (config.serial.port if config.transport is Transport.RTU and config.serial
                       else f"{config.host}:{config.port}")
        self.requests = 0
        self.connects = 0
        self.ever_connected = False
        self.last_error = ""

    def _make_client(self, timeout: float) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        cfg = self._cfg
        if cfg.transport is Transport.RTU:
            assert cfg.serial is not None
            s = cfg.serial
            return AsyncModbusSerialClient(s.port, framer=FramerType.RTU, baudrate=s.baudrate,
                                           bytesize=s.bytesize, parity=_PARITY[s.parity],
                                           stopbits=s.stopbits, timeout=timeout, retries=0,
                                           reconnect_delay=0)
        assert cfg.host is not None
        framer = FramerType.SOCKET if cfg.transport is Transport.TCP else FramerType.RTU
        return AsyncModbusTcpClient(cfg.host, port=cfg.port, framer=framer, timeout=timeout,
                                    retries=0, reconnect_delay=0)

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    def close(self) -> None:
        self._client.close()

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            raise LinkDown(self.last_error or "not connected")
        why = "connect failed"
        try:
            async with asyncio.timeout(self._cfg.connect_timeout_seconds):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            why = f"connect failed: {exc or type(exc).__name__}"
        if not ok:
            self._client.close()
            self.last_error = why
            if self._backoff.attempt == 0:
                log.warning("modbus %s: %s %s; retrying with backoff", self._cfg.name,
                            self._where, self.last_error)
            self._retry_at = loop.time() + self._backoff.next_delay()
            raise LinkDown(self.last_error)
        if self.ever_connected:
            log.info("modbus %s: %s connected again", self._cfg.name, self._where)
        self._backoff.reset()
        self._silent_run = 0
        self.connects += 1
        self.ever_connected = True
        self.last_error = ""

    async def read(self, unit: int, table: Table, start: int, count: int,
                   timeout_seconds: float) -> Sequence[int] | Sequence[bool]:
        """Registers (or bits) `start..start+count-1` of one unit; raises a ReadError."""
        async with self._lock:
            await self._ensure_connected()
            client = self._client
            call = {Table.HOLDING: client.read_holding_registers,
                    Table.INPUT: client.read_input_registers,
                    Table.COIL: client.read_coils,
                    Table.DISCRETE: client.read_discrete_inputs}[table]
            self.requests += 1
            try:
                async with asyncio.timeout(timeout_seconds):
                    rr = await call(start, count=count, device_id=unit)
            except TimeoutError:
                self._note_silence()
                raise NoResponse(f"no answer within {timeout_seconds} s") from None
            except ConnectionException as exc:
                self._drop(f"connection lost: {exc}")
                raise LinkDown(self.last_error) from None
            except ModbusException as exc:  # pymodbus's own timeout or a garbled frame
                self._note_silence()
                raise NoResponse(str(exc)) from None
            self._silent_run = 0
            if rr.isError():
                raise DeviceException(int(rr.exception_code))
            values: Sequence[int] | Sequence[bool] = rr.bits if table.is_bits else rr.registers
            if len(values) < count:
                raise NoResponse(f"short answer: {len(values)} of {count}")
            return values[:count] if len(values) > count else values

    def _note_silence(self) -> None:
        self._silent_run += 1
        if self._silent_run >= self._silent_limit and self._cfg.transport is not Transport.RTU:
            self._drop(f"{self._silent_run} requests in a row unanswered")

    def _drop(self, why: str) -> None:
        log.warning("modbus %s: %s dropped: %s", self._cfg.name, self._where, why)
        self.last_error = why
        self._client.close()
        self._silent_run = 0
