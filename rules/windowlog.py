"""A rate rule's window as an append-only log of stored segments, so that a commit costs
O(what changed), not O(window).

The window (pairs t, v in a flat `array('d')`) moves with every good sample, so its rule is
dirty at every commit group. Stored whole, a 10-minute window at 1 Hz is ~10 kB to copy,
pack and write per rule per commit. Instead, the durable form (`RateRule.durable`, what
`RuleEngine.take_dirty` writes) is:

- the instance's own row, (rule_id, asset): everything else, plus the *tail* of the window
  (the pairs not yet in a segment: at most `segment_points`) and where the window starts;
- segment rows, (rule_id, "asset\\x1fK"): K = 0, 1, 2, ... in order, each `segment_points`
  pairs of the window as float64 little-endian bytes, written once when the tail has grown
  past a segment, and deleted (data None) in the commit in which the window's start has left
  them. A segment is never rewritten: only the tail changes.

The rows of one `take_dirty` go into one transaction with the transitions of the group, so the
instance row and the segments it names are always stored together. Positions are absolute pair
numbers (counted since the instance was built), so they survive the in-memory cut of the part
of the array that left the window. At start the engine hands an instance its segment rows
(`parts`) with its own row; rows no instance claims are forgotten.
"""

from __future__ import annotations

import sys
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.model import RuleState
from rules.state import StateError, as_float, as_int, as_list, as_opt_float, new_state

SEP = "\x1f"  # between the asset and the segment number in a segment row's key
SEGMENT_POINTS = 64  # pairs per segment: ~1 kB a row; the tail copied per commit is at most this
_BIG_ENDIAN = sys.byteorder == "big"


def segment_key(asset: str, k: int) -> str:
    return f"{asset}{SEP}{k}"


def split_key(asset: str) -> tuple[str, int] | None:
    """(asset, K) of a segment row's asset field; None for an ordinary row."""
    owner, sep, number = asset.rpartition(SEP)
    if not sep or not number.isdigit():
        return None
    return owner, int(number)


def split_parts(states: Iterable[RuleState]
                 ) -> tuple[list[RuleState], dict[tuple[str, str], dict[str, dict[int, bytes]]]]:
    """(the instances' own rows, their extra rows: (rule_id, asset) -> fingerprint -> K ->
    data), apart: what `RuleEngine.restore_states` reads at start."""
    own: list[RuleState] = []
    parts: dict[tuple[str, str], dict[str, dict[int, bytes]]] = {}
    for state in states:
        found = split_key(state.asset) if state.data is not None else None
        if found is None:
            own.append(state)
        else:
            by_fp = parts.setdefault((state.rule_id, found[0]), {})
            by_fp.setdefault(state.fingerprint, {})[found[1]] = state.data
    return own, parts


def le_bytes(points: array[float], start: int, stop: int | None = None) -> bytes:
    """points[start:stop] as little-endian float64 bytes (stored state reads the same on any
    machine)."""
    if not _BIG_ENDIAN:
        return memoryview(points)[start:stop].tobytes()
    part = points[start:stop]
    part.byteswap()
    return part.tobytes()


def from_le(data: bytes, what: str) -> array[float]:
    if len(data) % 16:
        raise StateError(f"{what}: {len(data)} bytes, not pairs of float64")
    points = array("d", data)
    if _BIG_ENDIAN:
        points.byteswap()
    if any(x != x for x in points):  # NaN
        raise StateError(f"{what}: NaN")
    return points


class WindowLog:
    """Which segments of one window are stored: `segs` (K, first pair, end pair), oldest
    first; `sealed`: the pairs before it are in segments (or gone); `next`: the next K."""

    __slots__ = ("live_end", "next", "sealed", "segs", "size")

    def __init__(self, size: int = SEGMENT_POINTS) -> None:
        self.size = size
        self.segs: deque[tuple[int, int, int]] = deque()
        self.sealed = 0
        self.next = 0
        self.live_end = float("inf")  # end pair of the oldest stored segment (inf: none)

    def keys(self) -> list[int]:
        return [k for k, _, _ in self.segs]

    def roll(self, points: array[float], base: int, head_abs: int, rule_id: str, asset: str,
             fingerprint: str, log: list[RuleState]) -> None:
        """Seal whole segments out of the tail (always leaving at least its newest pair: that
        one may still be moved forward in time) and delete those the window has left."""
        end = base + (len(points) >> 1)
        sealed, size, segs = self.sealed, self.size, self.segs
        if sealed < base:  # cut from memory before it was sealed: it had left the window
            sealed = base
        while end - sealed > size:
            i = (sealed - base) * 2
            log.append(new_state(rule_id, segment_key(asset, self.next), fingerprint,
                                 le_bytes(points, i, i + 2 * size)))
            segs.append((self.next, sealed, sealed + size))
            self.next += 1
            sealed += size
        self.sealed = sealed
        while segs and segs[0][2] <= head_abs:
            log.append(new_state(rule_id, segment_key(asset, segs.popleft()[0]), fingerprint,
                                 None))
        self.live_end = segs[0][2] if segs else float("inf")

    def first(self) -> int:
        return self.segs[0][0] if self.segs else self.next

    def join(self, kind: list[Any], parts: Mapping[int, bytes]
             ) -> tuple[float | None, float, array[float], int, int]:
        """Take back a durable window: (first_ts, delta, points, base, head) and this log set
        to the stored segments; StateError (and nothing changed) when a segment is missing or
        the positions do not fit."""
        first_ts, delta, tail, tail_from, head_abs, k_first, k_next = kind
        if not isinstance(tail, bytes):
            raise StateError("rate window tail: expected bytes")
        tail_from = as_int(tail_from, "tail start")
        head_abs, k_first, k_next = (as_int(head_abs, "window start"),
                                     as_int(k_first, "first segment"),
                                     as_int(k_next, "next segment"))
        missing = [k for k in range(k_first, k_next) if k not in parts]
        if missing or k_first > k_next or k_first < 0:
            raise StateError(f"rate window: segments {k_first}..{k_next - 1}, missing "
                             f"{missing[:5]}")
        chunks = [from_le(parts[k], f"rate window segment {k}") for k in range(k_first, k_next)]
        sizes = [len(c) >> 1 for c in chunks]
        base = tail_from - sum(sizes)
        points = array("d")
        for chunk in chunks:
            points.extend(chunk)
        points.extend(from_le(tail, "rate window tail"))
        if not base <= head_abs <= base + (len(points) >> 1):
            raise StateError(f"rate window start {head_abs} outside {base}..")
        segs: deque[tuple[int, int, int]] = deque()
        start = base
        for k, n in zip(range(k_first, k_next), sizes, strict=True):
            segs.append((k, start, start + n))
            start += n
        first, change = as_opt_float(first_ts, "first_ts"), as_float(delta, "delta")
        self.segs, self.sealed, self.next = segs, tail_from, k_next
        self.live_end = segs[0][2] if segs else float("inf")
        return first, change, points, base, (head_abs - base) * 2


def is_logged(kind: Any) -> bool:
    """Whether a rate rule's stored window is in the log form (else the whole window)."""
    return isinstance(kind, list | tuple) and len(kind) == 7


def check_kind(kind: Any) -> list[Any]:
    return as_list(kind, 7, "rate window (log form)")
