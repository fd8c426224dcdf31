"""Reading an SQLite file whose first 100 bytes (the database header) are destroyed.

The header holds no table data: the page size, format numbers, counters and the freelist. The
schema and every table live in pages that may be intact. So a copy of the damaged file gets a
header rebuilt from the defaults (UTF-8, no reserved bytes, rollback journal, no freelist) for
each plausible page size, and the first one under which the schema reads is used. The WAL is
not replayed through a rebuilt header (its frames could not be trusted against it).
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import struct
from pathlib import Path

from buffer.schema import APPLICATION_ID

_PAGE_SIZES = (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512)  # SQLite's default first


def header(page_size: int, pages: int) -> bytes:
    """A valid 100-byte database header for a file of `pages` pages of `page_size` bytes."""
    return b"".join((
        b"SQLite format 3\0",
        struct.pack(">HBBBBBB", 1 if page_size == 65536 else page_size, 1, 1, 0, 64, 32, 32),
        struct.pack(">IIIIIIIIIIII",
                    1,          # file change counter
                    pages,      # size in pages (valid: the change counter matches offset 92)
                    0, 0,       # no freelist: its pages are simply not reused
                    1,          # schema cookie
                    4,          # schema format
                    0, 0,       # default cache size, no auto-vacuum
                    1,          # UTF-8
                    0, 0,       # user version, incremental vacuum
                    APPLICATION_ID),
        bytes(20),
        struct.pack(">II", 1, sqlite3.sqlite_version_info[0] * 1_000_000
                    + sqlite3.sqlite_version_info[1] * 1000 + sqlite3.sqlite_version_info[2]),
    ))


def rebuilt_copy(damaged: Path) -> Path | None:
    """A copy of `damaged` (beside it, `<name>.rebuilt`) whose schema reads under a rebuilt
    header, or None when no page size works. The caller deletes the copy."""
    size = damaged.stat().st_size
    copy = damaged.with_name(damaged.name + ".rebuilt")
    try:
        shutil.copyfile(damaged, copy)
    except OSError:
        copy.unlink(missing_ok=True)
        return None
    for page_size in _PAGE_SIZES:
        if size < page_size or size % page_size:
            continue
        with copy.open("r+b") as f:
            f.write(header(page_size, size // page_size))
        with contextlib.suppress(sqlite3.DatabaseError):
            db = sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True)
            try:
                names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            finally:
                db.close()
            if "outbox" in names:
                return copy
    copy.unlink(missing_ok=True)
    return None
