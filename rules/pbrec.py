"""The `.pbrec` recording: samples as columns, 21 bytes a sample, read at disk speed.

`.pbrec` keeps the same fields (asset, signal, value, quality, source_ts) as columns, 21 bytes a
sample, and reads back into `rules.columns.Columns` at disk speed. Layout (all integers unsigned
little-endian, CRC-32 as zlib/PNG/Ethernet compute it):

    header, 16 bytes:
      0   8  magic 89 50 42 52 45 43 0D 0A ("\x89PBREC\r\n")
      8   4  format version, 1
      12  4  reserved, 0
    then blocks, one after the other until the end of the file; a block is:
      0   4  marker "PBBK"
      4   4  n: samples in the block (may be 0)
      8   4  m: length of the meta in bytes
      12  4  CRC-32 of the payload
      16  4  CRC-32 of bytes 0..15 of the block followed by the meta
      20  m  meta, a msgpack map: {"first_key": k, "keys": [[asset, signal], ...]}: the keys
             this block introduces, numbered k, k+1, ...; k is the count of keys introduced by
             the blocks before it
      then the payload, 21*n bytes, four arrays one after the other:
             key      u32[n]  key number per sample (indexes all keys introduced so far)
             ts       f64[n]  source time, seconds since the epoch
             value    f64[n]  NaN where the sample has no value
             quality  u8[n]   0 GOOD, 1 UNCERTAIN, 2 BAD, plus 4 when the sample has no value

Samples are in recorded order across blocks. A writer cut off by a power loss leaves at most a
short or damaged last block: reading keeps every complete block before it and says so in
`Columns.warning`. Anything else that does not fit the layout is a RecordingError naming the file
and the byte offset.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Iterator
from io import BufferedReader
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

import msgpack
import numpy as np
import numpy.typing as npt

from gateway.model import Sample
from rules.columns import BAD, NO_VALUE, Columns, columns_from_samples, concat, empty_columns
from rules.recording import RecordingError, each_once, load_recording


def load_columns(path: Path) -> Columns:
    """A whole recording as columns: `.pbrec` by its suffix, else CSV or JSON lines."""
    path = Path(path)
    if path.suffix.lower() == ".pbrec":
        return read_columns(path)
    return columns_from_samples(each_once(load_recording(path)))


MAGIC = b"\x89PBREC\r\n"
VERSION = 1
_HEADER = struct.Struct("<8sII")
_BLOCK = struct.Struct("<4sIIII")  # marker, n, m, payload CRC, head+meta CRC
_MARKER = b"PBBK"
SAMPLE_BYTES = 21
_LITTLE = sys.byteorder == "little"


def _le(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return arr if _LITTLE else arr.astype(arr.dtype.newbyteorder("<"))


class RecordingWriter:
    """Write a `.pbrec` recording: `with RecordingWriter(path) as w: w.write(sample)`.

    Samples are buffered and written as a block every `block_samples` samples, on `flush()`
    and on `close()`; the file is synced to disk on close. A power loss costs the samples not
    yet in a complete block.
    """

    def __init__(self, path: Path, *, block_samples: int = 65_536) -> None:
        if block_samples < 1:
            raise ValueError("block_samples must be at least 1")
        self.path = Path(path)
        self.block_samples = block_samples
        self.samples_written = 0
        self._index: dict[tuple[str, str], int] = {}
        self._keys: list[tuple[str, str]] = []  # in index order
        self._keys_written = 0
        self._key: list[int] = []
        self._ts: list[float] = []
        self._value: list[float] = []
        self._quality: list[int] = []
        self._file: IO[bytes] | None = self.path.open("wb")
        try:
            self._file.write(_HEADER.pack(MAGIC, VERSION, 0))
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def write(self, sample: Sample) -> None:
        k = (sample.asset, sample.signal)
        i = self._index.get(k)
        if i is None:
            i = self._index[k] = len(self._keys)
            self._keys.append(k)
        self._key.append(i)
        self._ts.append(sample.source_ts)
        if sample.value is None:
            self._value.append(float("nan"))
            self._quality.append(int(sample.quality) | NO_VALUE)
        else:
            self._value.append(sample.value)
            self._quality.append(int(sample.quality))
        if len(self._key) >= self.block_samples:
            self._write_pending()

    def write_columns(self, columns: Columns) -> None:
        """Append all samples of `columns` (and all its keys), after those written before."""
        if len(columns) and int(columns.key.max()) >= len(columns.keys):
            raise ValueError("Columns.key holds a key number that Columns.keys lacks")
        if len(columns) and int((columns.quality & ~np.uint8(NO_VALUE)).max()) > BAD:
            raise ValueError("Columns.quality holds a quality other than GOOD, UNCERTAIN or BAD")
        self._write_pending()
        for k in columns.keys:
            if k not in self._index:
                self._index[k] = len(self._keys)
                self._keys.append(k)
        mapping = np.array([self._index[k] for k in columns.keys], dtype=np.uint32)
        key = columns.key
        if not np.array_equal(mapping, np.arange(len(mapping), dtype=np.uint32)):
            key = mapping[key]
        for a in range(0, len(columns), self.block_samples):
            b = a + self.block_samples
            self._write_block(key[a:b], columns.ts[a:b], columns.value[a:b],
                              columns.quality[a:b])

    def flush(self) -> None:
        """Write what is buffered as a block and hand it to the operating system."""
        self._write_pending()
        if self._keys_written < len(self._keys):
            self._write_block(*_EMPTY)  # keys without samples, so they round-trip too
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()
            self._file = None

    def _write_pending(self) -> None:
        if not self._key:
            return
        self._write_block(np.array(self._key, np.uint32), np.array(self._ts, np.float64),
                          np.array(self._value, np.float64), np.array(self._quality, np.uint8))
        self._key, self._ts, self._value, self._quality = [], [], [], []

    def _write_block(self, key: npt.NDArray[np.uint32], ts: npt.NDArray[np.float64],
                     value: npt.NDArray[np.float64], quality: npt.NDArray[np.uint8]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the recording is closed")
        new = self._keys[self._keys_written:]
        meta = msgpack.packb({"first_key": self._keys_written, "keys": [list(k) for k in new]})
        parts = [_le(np.ascontiguousarray(a)) for a in (key, ts, value, quality)]
        crc = 0
        for part in parts:
            crc = zlib.crc32(part.data, crc)
        head = _BLOCK.pack(_MARKER, len(key), len(meta), crc, 0)[:16]
        head += struct.pack("<I", zlib.crc32(meta, zlib.crc32(head)))
        self._file.write(head + meta)
        for part in parts:
            self._file.write(part.data)
        self._keys_written += len(new)
        self.samples_written += len(key)


_EMPTY = (np.empty(0, np.uint32), np.empty(0, np.float64), np.empty(0, np.float64),
          np.empty(0, np.uint8))


def write_columns(path: Path, columns: Columns, *, block_samples: int = 65_536) -> int:
    """Write `columns` as a `.pbrec` recording; returns the number of samples written."""
    with RecordingWriter(path, block_samples=block_samples) as w:
        w.write_columns(columns)
        return w.samples_written


class _Block(NamedTuple):
    offset: int
    n: int
    payload_at: int
    payload_crc: int
    keys_known: int  # keys introduced by this block and those before it


def read_columns(path: Path) -> Columns:
    """A `.pbrec` recording as columns; a cut-off tail is dropped and named in `warning`."""
    parts = list(iter_columns(path, slab_samples=None))
    return parts[0] if len(parts) == 1 else concat(parts)


def iter_columns(path: Path, slab_samples: int | None = 8_000_000) -> Iterator[Columns]:
    """A `.pbrec` recording as consecutive parts of whole blocks, in recorded order: each part
    ends with the first block that brings it to `slab_samples` samples (None: one part).

    Every part holds all keys known so far (`keys` only grows, so key numbers stay valid from
    part to part). Block heads are all checked before the first part is given; a payload is
    checked when its part is read, so a damaged block in the middle is a RecordingError after
    the parts before it were given. A cut-off tail is dropped and named in the `warning` of the
    last part. Memory: one part at a time.
    """
    path = Path(path)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size or head[:8] != MAGIC:
            if _HEADER.pack(MAGIC, VERSION, 0).startswith(head) or _zeros_to_end(f, 0):
                yield empty_columns(_cut(path, 0, 0, "a cut-off header"))
                return
            raise RecordingError(f"{path}: byte 0: this is not a PlantBridge recording "
                                 f"(a .pbrec file starts with \\x89PBREC)")
        _, version, _ = _HEADER.unpack(head)
        if version != VERSION:
            raise RecordingError(f"{path}: byte 8: recording format version {version}; this "
                                 f"PlantBridge reads version {VERSION}")
        blocks, keys, warning = _scan(path, f, size)
        limit = slab_samples or max(1, sum(b.n for b in blocks))
        at = 0  # samples read before this part
        i = 0
        while True:
            group: list[_Block] = []
            n = 0
            while i < len(blocks) and (n < limit or not group):
                group.append(blocks[i])
                n += blocks[i].n
                i += 1
            cols = (np.empty(n, np.uint32), np.empty(n, np.float64), np.empty(n, np.float64),
                    np.empty(n, np.uint8))
            got = 0
            for block in group:
                parts = [c[got:got + block.n] for c in cols]
                f.seek(block.payload_at)
                if not _read_payload(f, parts, block.payload_crc):
                    if block is blocks[-1] and warning is None:
                        warning = _cut(path, block.offset, at + got, "a damaged block")
                        break
                    raise RecordingError(f"{path}: byte {block.offset}: the block there is "
                                         f"damaged (its samples do not match their checksum)")
                _check_payload(path, block, parts)
                got += block.n
            known = group[-1].keys_known if group else len(keys)
            last = i >= len(blocks)
            key, ts, value, quality = cols
            yield Columns(tuple(keys[:len(keys) if last else known]), key[:got], ts[:got],
                          value[:got], quality[:got], warning if last else None)
            at += got
            if last:
                return


def _scan(path: Path, f: BufferedReader, size: int) -> tuple[list[_Block], list[tuple[str, str]],
                                                      str | None]:
    """Walk the block heads: complete blocks, their keys, and a warning for a cut-off tail."""
    blocks: list[_Block] = []
    keys: list[tuple[str, str]] = []
    off, count = _HEADER.size, 0
    while off < size:
        head = _head(f, off, size)
        if isinstance(head, str):  # a head we cannot trust: the tail of a cut write, or damage
            if _block_after(f, off + 1, size):
                raise RecordingError(f"{path}: byte {off}: the block there is damaged (no intact "
                                     f"block head), and intact blocks follow it")
            if head == "short" or _zeros_to_end(f, off):
                return blocks, keys, _cut(path, off, count)
            return blocks, keys, _cut(path, off, count, "a damaged block")
        n, m, payload_crc, meta = head
        new = _meta_keys(path, off, meta, len(keys))
        end = off + _BLOCK.size + m + SAMPLE_BYTES * n
        if end > size:
            return blocks, keys, _cut(path, off, count)
        keys.extend(new)
        blocks.append(_Block(off, n, off + _BLOCK.size + m, payload_crc, len(keys)))
        count += n
        off = end
    return blocks, keys, None


def _head(f: BufferedReader, off: int, size: int) -> tuple[int, int, int, bytes] | str:
    """(n, m, payload CRC, meta) of the block at `off`; "short" when the file ends inside its
    head or meta, "bad" when they do not match their checksum."""
    f.seek(off)
    head = f.read(_BLOCK.size)
    if not _MARKER.startswith(head[:4]):
        return "bad"
    if len(head) < _BLOCK.size:
        return "short"
    _, n, m, payload_crc, head_crc = _BLOCK.unpack(head)
    if off + _BLOCK.size + m > size:
        return "short"
    meta = f.read(m)
    if zlib.crc32(meta, zlib.crc32(head[:16])) != head_crc:
        return "bad"
    return n, m, payload_crc, meta


def _block_after(f: BufferedReader, start: int, size: int) -> bool:
    """True when an intact block head lies anywhere from `start` on."""
    chunk_size = 1 << 20
    pos = start
    while pos < size:
        f.seek(pos)
        chunk = f.read(chunk_size)
        i = chunk.find(_MARKER)
        if i < 0:
            pos += max(len(chunk) - 3, 1)
        elif not isinstance(_head(f, pos + i, size), str):
            return True
        else:
            pos += i + 1
    return False


def _meta_keys(path: Path, off: int, meta: bytes, known: int) -> list[tuple[str, str]]:
    try:
        got = msgpack.unpackb(meta)
        first, raw = got["first_key"], got["keys"]
        new = [(a, s) for a, s in raw if isinstance(a, str) and isinstance(s, str)]
        if first != known or len(new) != len(raw):
            raise ValueError
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        raise RecordingError(f"{path}: byte {off}: the block there does not list its keys as "
                             f"the format says (first_key {known}, keys of [asset, signal])"
                             ) from None
    return new


def _read_payload(f: BufferedReader, parts: list[npt.NDArray[Any]], crc_expected: int) -> bool:
    crc = 0
    for part in parts:
        raw = part.view(np.uint8)
        got = 0
        while got < len(raw):
            n = f.readinto(raw[got:].data)
            if not n:
                return False
            got += n
        crc = zlib.crc32(raw.data, crc)
        if not _LITTLE:
            part.byteswap(inplace=True)
    return crc == crc_expected


def _check_payload(path: Path, block: _Block, parts: list[npt.NDArray[Any]]) -> None:
    key, _, _, quality = parts
    if block.n and int(key.max()) >= block.keys_known:
        raise RecordingError(f"{path}: byte {block.offset}: the block there uses a key number "
                             f"it has not introduced")
    if block.n and int((quality & ~np.uint8(NO_VALUE)).max()) > BAD:
        raise RecordingError(f"{path}: byte {block.offset}: the block there holds a quality "
                             f"other than GOOD, UNCERTAIN or BAD")


def _zeros_to_end(f: BufferedReader, off: int) -> bool:
    """True when the file holds only zero bytes from `off` on (a tail never written to disk)."""
    f.seek(off)
    while chunk := f.read(1 << 20):
        if chunk.count(0) != len(chunk):
            return False
    return True


def _cut(path: Path, off: int, count: int, what: str = "a cut-off block") -> str:
    return f"{path}: recording ends in {what} at byte {off}; {count} samples read"
