"""Checking a WAL file as found at open, before SQLite replays it.

SQLite replays the WAL up to the first frame whose checksum fails and silently drops the rest:
for a WAL damaged in the middle, committed transactions after the damage vanish without any
error, and `quick_check` passes. So before the first connection we walk the frames ourselves
(format: https://www.sqlite.org/fileformat.html#the_write_ahead_log) and say what will be lost.

Frames with other salts are leftovers of an earlier WAL generation, and frames after the last
commit frame are an unfinished transaction: both are normal and not reported. Reported are a
header that fails its checksum while frames follow, a frame of this generation whose checksum
fails while frames follow it, and a partial frame at the end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_MAGIC = (0x377F0682, 0x377F0683)  # checksums over little-endian / big-endian words
_HEADER = 32
_FRAME_HEADER = 24
_MAX_BYTES = 256 << 20  # never spend more than this on reading a WAL at open


@dataclass(slots=True)
class WalDamage:
    """What SQLite will not replay from a damaged WAL, and where a copy of it was kept."""

    detail: str
    frames_dropped: int
    kept_at: Path | None = None


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def inspect_wal(wal: Path) -> WalDamage | None:
    """The damage SQLite would silently drop from `wal`, or None when it replays cleanly."""
    try:
        with wal.open("rb") as f:
            data = f.read(_MAX_BYTES)
    except OSError:
        return None
    if len(data) <= _HEADER:
        return None
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:32])
    big = magic == _MAGIC[1]
    sane = 512 <= page_size <= 65536 and not page_size & (page_size - 1)
    frame = _FRAME_HEADER + (page_size if sane else 4096)
    n_frames = (len(data) - _HEADER) // frame
    if magic not in _MAGIC or not sane or _checksum(data[:24], 0, 0, big) != (c0, c1):
        return WalDamage(f"WAL header damaged; {len(data) - _HEADER} bytes of WAL ignored",
                         n_frames)
    salt = struct.pack(">2I", salt1, salt2)

    def ours(j: int) -> bool:  # frame j belongs to this WAL generation
        return data[_HEADER + j * frame + 8:_HEADER + j * frame + 16] == salt

    s = (c0, c1)
    for i in range(n_frames):
        start = _HEADER + i * frame
        head = data[start:start + _FRAME_HEADER]
        f0, f1 = struct.unpack(">2I", head[16:24])
        s = _checksum(head[:8], *s, big)
        s = _checksum(data[start + _FRAME_HEADER:start + frame], *s, big)
        if head[8:16] != salt or s != (f0, f1):
            # the WAL ends here for SQLite: a loss only if frames of this generation follow
            # (otherwise: an earlier generation's leftovers, or an unfinished last write)
            if not any(ours(j) for j in range(i + 1, n_frames)):
                return None
            return WalDamage(f"WAL frame {i + 1} of {n_frames} is damaged; SQLite drops the "
                             f"{n_frames - i} frames from there on", n_frames - i)
    tail = (len(data) - _HEADER) % frame
    if tail >= 16 and data[len(data) - tail + 8:len(data) - tail + 16] == salt:
        return WalDamage(f"WAL ends in a partial frame ({tail} of {frame} bytes): the "
                         "transaction it was part of is dropped", 1)
    return None
