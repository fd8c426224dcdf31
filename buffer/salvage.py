"""Salvage, not amnesia: carry what a damaged outbox still holds into the fresh one.

A corrupt outbox is moved aside and a fresh file takes its place (buffer/opening.py). Starting
empty would forget open episodes (the next raise would open a second request while the first is
never closed) and pending requests. So everything that can still be read is copied over: outbox
rows (pending, dead, and delivered keys, so re-enqueueing a delivered key stays a no-op),
episodes, receipts (a clear must still reference the request its raise created), rule state,
sample marks and unacknowledged notices. What cannot be read is counted per table.

Reading is defensive, with Python's sqlite3 only: each table is walked forward in key order
until a page fails, then backward from the end until one fails; rows of rowid tables between the
two are probed one rowid at a time (a point lookup only touches the pages on its own path), and
what still fails is lost. A row whose content does not decode (bad msgpack body) is lost too.
The damaged file is opened read-only: it stays as found (SQLite still reads its WAL).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from buffer.header import rebuilt_copy
from buffer.records import SalvageReport

_BATCH = 256
_PROBE_LIMIT = 200_000  # rowids probed one by one across a damaged stretch, at most
_OUTBOX_COLS = ("id", "key", "sink", "asset", "episode_id", "kind", "class", "created_at",
                "body", "size", "state", "attempts", "next_attempt_at", "last_error",
                "settled_at", "sent_at", "priority")
# table -> (columns to carry, key columns, whether the key is the rowid)
_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "outbox": (_OUTBOX_COLS, ("rowid",), True),
    "episodes": (("episode_id", "rule_id", "asset", "raised_at", "severity", "cleared_at"),
                 ("rowid",), True),
    "receipts": (("sink", "episode_id", "receipt", "stored_at"), ("sink", "episode_id"), False),
    "rule_state": (("rule_id", "asset", "fingerprint", "data", "updated_at"),
                   ("rule_id", "asset"), False),
    "sample_marks": (("source", "asset", "signal", "device_ts"),
                     ("source", "asset", "signal"), False),
    "notices": (("kind", "created_at", "message", "detail", "acknowledged_at"),
                ("rowid",), True),
}
ADD_NOTICE = "INSERT INTO notices (kind, created_at, message, detail) VALUES (?, ?, ?, ?)"
SALVAGE_PENDING = "salvage-pending"  # a salvage that has not finished: its message is the path
_CARRIED = {
    "open_episodes": "SELECT count(*) FROM episodes WHERE cleared_at IS NULL",
    "closed_episodes": "SELECT count(*) FROM episodes WHERE cleared_at IS NOT NULL",
    "pending": "SELECT count(*) FROM outbox WHERE state = 0",
    "dead": "SELECT count(*) FROM outbox WHERE state = 2",
    "delivered": "SELECT count(*) FROM outbox WHERE state = 1",
    "receipts": "SELECT count(*) FROM receipts",
    "rule_state": "SELECT count(*) FROM rule_state",
    "sample_marks": "SELECT count(*) FROM sample_marks",
    # earlier ones: counted before this one is added
    "notices": f"SELECT count(*) FROM notices WHERE kind <> '{SALVAGE_PENDING}'",
}


class _TableScan:
    """Reads one table of the damaged file as far as it can; counts what it cannot."""

    def __init__(self, old: sqlite3.Connection, table: str, cols: Sequence[str],
                 keys: Sequence[str], rowid: bool) -> None:
        self.old, self.table, self.rowid = old, table, rowid
        self.keys = list(keys)
        self.n_keys = len(keys)
        self.select = f"SELECT {', '.join([*keys, *cols])} FROM {table}"
        self.read = 0
        self.failed_probes = 0
        self.gap: tuple[Any, Any] | None = None  # last good key from the front, from the back

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Every readable row (without its key columns), front to back."""
        front, done = yield from self._walk(ascending=True, bound=None)
        if done:
            return
        back, _ = yield from self._walk(ascending=False, bound=front)
        self.gap = (front, back)
        if self.rowid:
            yield from self._probe(front, back)

    def _walk(self, *, ascending: bool,
              bound: Any) -> Generator[tuple[Any, ...], None, tuple[Any, bool]]:
        """Rows in key order (descending: only those after `bound`); returns the last key read
        and whether the walk reached the end without an error."""
        op, order = (">", "ASC") if ascending else ("<", "DESC")
        keys = ", ".join(self.keys)
        last: Any = None
        batch = _BATCH
        while True:
            where, args = "", ()
            if last is not None:
                where, args = f" WHERE ({keys}) {op} ({_marks(self.n_keys)})", last
            if bound is not None and not ascending:
                both = f"({keys}) > ({_marks(self.n_keys)})"
                where = f"{where} AND {both}" if where else f" WHERE {both}"
                args = (*args, *bound)
            sql = (f"{self.select}{where} ORDER BY {', '.join(k + ' ' + order for k in self.keys)}"
                   f" LIMIT {batch}")
            n = 0
            try:
                for row in self.old.execute(sql, args):
                    n += 1
                    last = tuple(row[:self.n_keys])
                    self.read += 1
                    yield tuple(row[self.n_keys:])
            except sqlite3.DatabaseError:
                if batch == 1:
                    return last, False
                # step up to the damage one row at a time: reading ahead in a batch would fail
                # before it returned the last good rows (in WITHOUT ROWID tables, the entries
                # of interior pages next to the damaged leaf)
                batch = 1
                continue
            if n < batch:
                return last, True

    def _probe(self, front: Any, back: Any) -> Iterator[tuple[Any, ...]]:
        low = front[0] + 1 if front is not None else 1
        high = back[0] - 1 if back is not None else self._max_rowid()
        if high is None or high - low >= _PROBE_LIMIT:
            return
        for rid in range(low, high + 1):
            try:
                row = self.old.execute(f"{self.select} WHERE rowid = ?", (rid,)).fetchone()
            except sqlite3.DatabaseError:
                self.failed_probes += 1
                continue
            if row is not None:
                self.read += 1
                yield tuple(row[self.n_keys:])
        self.gap = None  # every rowid in the gap was tried

    def _max_rowid(self) -> int | None:
        with contextlib.suppress(sqlite3.DatabaseError):
            row = self.old.execute(f"SELECT max(rowid) FROM {self.table}").fetchone()
            return int(row[0]) if row and row[0] is not None else None
        return None

    def lost(self, invalid: int) -> int | str | None:
        """Rows lost: a count when the table's own count is readable (through an index), else
        what is known about the damaged stretch."""
        total: int | None = None
        with contextlib.suppress(sqlite3.DatabaseError):
            total = int(self.old.execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])
        if total is not None:
            return max(0, total - self.read) + invalid or None
        if self.gap is None and not self.failed_probes:
            return invalid or None
        where = (f"between keys {self.gap[0]} and {self.gap[1]}" if self.gap is not None
                 else f"{self.failed_probes} rowids unreadable")
        return f"an unknown number of rows ({where})" + (f", {invalid} invalid" if invalid else "")


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _valid_outbox(row: tuple[Any, ...]) -> bool:
    body, state = row[8], row[10]
    if state not in (0, 1, 2) or not all(isinstance(v, str) for v in row[1:6]):
        return False
    if body is None:
        return bool(state == 1)
    try:
        msgpack.unpackb(body, strict_map_key=False)
    except Exception:  # any decoding failure makes the row unusable
        return False
    return True


def _valid_blob(index: int) -> Callable[[tuple[Any, ...]], bool]:
    def check(row: tuple[Any, ...]) -> bool:
        try:
            msgpack.unpackb(row[index], strict_map_key=False)
        except Exception:
            return False
        return True
    return check


_VALID: dict[str, Callable[[tuple[Any, ...]], bool]] = {
    "outbox": _valid_outbox, "rule_state": _valid_blob(3), "notices": _valid_blob(3)}


def salvage(moved: Path, fresh: Path, now: float | None = None, *,
            pending_notice: int | None = None) -> SalvageReport:
    """Copy what can be read from the damaged file `moved` into the fresh outbox at `fresh`
    (already migrated, idle) in one transaction, and record the report as a notice, replacing
    the `pending_notice` that recorded the intent."""
    now = time.time() if now is None else now
    unreadable: dict[str, int | str] = {}
    new = sqlite3.connect(fresh, isolation_level=None)
    try:
        new.execute("PRAGMA busy_timeout = 5000")
        new.execute("BEGIN IMMEDIATE")
        _copy_file(moved, new, unreadable)
        carried = {k: int(new.execute(sql).fetchone()[0]) for k, sql in _CARRIED.items()}
        report = SalvageReport(moved, carried, unreadable)
        if pending_notice is not None:
            new.execute("DELETE FROM notices WHERE id = ?", (pending_notice,))
        new.execute(ADD_NOTICE, ("salvage", now, report.summary(), msgpack.packb(
                {"moved_to": str(moved), "carried": carried, "unreadable": unreadable})))
        new.execute("COMMIT")
    finally:
        if new.in_transaction:
            new.execute("ROLLBACK")
        new.close()
    return report


def _tables(path: Path) -> tuple[sqlite3.Connection, set[str]]:
    """Open read-only (the kept file and its WAL stay as found, for forensics) and read the
    schema; raises sqlite3.Error when even that fails."""
    old = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        return old, {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except BaseException:
        old.close()
        raise


def _copy_file(moved: Path, new: sqlite3.Connection, unreadable: dict[str, int | str]) -> None:
    rebuilt = None
    try:
        old, present = _tables(moved)
    except sqlite3.Error as exc:
        # maybe only the header is gone: read a copy with a rebuilt one
        rebuilt = rebuilt_copy(moved) if moved.exists() else None
        if rebuilt is None:
            unreadable["file"] = f"not readable as SQLite: {exc}"
            return
        unreadable["header"] = ("damaged; rebuilt to read the tables, without replaying "
                                "the WAL")
        old, present = _tables(rebuilt)
    try:
        _copy_all(old, new, unreadable, present)
    finally:
        old.close()
        if rebuilt is not None:
            rebuilt.unlink(missing_ok=True)


def _copy_all(old: sqlite3.Connection, new: sqlite3.Connection,
              unreadable: dict[str, int | str], present: set[str]) -> None:
    for table, (cols, keys, rowid) in _TABLES.items():
        if table not in present:
            continue  # a file of an older schema version
        try:
            have = {r[1] for r in old.execute(f"PRAGMA table_info({table})")}
        except sqlite3.DatabaseError as exc:
            unreadable[table] = f"table unreadable: {exc}"
            continue
        carried = [c for c in cols if c in have]  # older versions lack later columns
        lost = _copy_table(old, new, table, carried, keys, rowid)
        if lost is not None:
            unreadable[table] = lost


def _copy_table(old: sqlite3.Connection, new: sqlite3.Connection, table: str,
                cols: Sequence[str], keys: Sequence[str], rowid: bool) -> int | str | None:
    scan = _TableScan(old, table, cols, keys, rowid)
    valid = _VALID.get(table)
    invalid = 0

    def checked(rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        nonlocal invalid
        for row in rows:
            if valid is None or valid(row):
                yield row
            else:
                invalid += 1

    new.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(cols)})"
                    f" VALUES ({_marks(len(cols))})", checked(scan.rows()))
    return scan.lost(invalid)
