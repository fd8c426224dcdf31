"""One daemon per outbox: an exclusive, non-blocking `flock` on `<outbox path>.lock`.

flock belongs to the open file, so the kernel releases it when the holder exits in any way,
kill -9 included: there is no stale lock to clean up. The file keeps the holder's PID, only so
that the refusal can name it; the lock itself is what counts. The lock file is never deleted
(deleting it would let a third process lock a new inode while the second still holds the old
one). Offline tools do not take the lock and may read the outbox beside the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from buffer.errors import OutboxLocked, StorageError

__all__ = ["OutboxFileLock", "in_use", "lock_path"]


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def in_use(outbox: Path) -> bool:
    """Whether a daemon holds the lock of `outbox` right now (probed, never kept)."""
    path = lock_path(outbox)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False  # no lock file: no daemon ever ran here
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False


class OutboxFileLock:
    """A held lock; `release()` (idempotent) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, outbox: Path) -> OutboxFileLock:
        """Lock `outbox` for this process, or raise OutboxLocked naming the holder's PID."""
        path = lock_path(outbox)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(outbox, f"cannot open lock file {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise OutboxLocked(outbox, pid) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(outbox, f"cannot lock {path}: {exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds; only the PID in the refusal message would be missing
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
