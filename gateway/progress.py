"""Progress of long commands on a terminal: done/total, rate and time left; silent otherwise.

`replay` of a week, `record` for an hour, `reconcile` of a month and `dead-letters --requeue
all` can each run for minutes. On a terminal (stderr is a TTY) one line on stderr is redrawn
in place, at most `interval_seconds` apart (so a fast loop pays a clock read, not a write);
into a pipe, a file or a cron mail nothing is written at all, so scripts see only the report.

    with Progress("replaying", total=n_samples, unit="samples") as p:
        for chunk in chunks:
            ...
            p.advance(len(chunk))

With `total=None` the line shows what is done and the time spent (no estimate to make).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO


def duration_words(seconds: float) -> str:
    """12 s, 4 min 05 s, 2 h 10 min."""
    s = max(0, int(seconds + 0.5))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _count(n: float) -> str:
    return f"{n:,.0f}" if n == int(n) else f"{n:,.1f}"


class Progress:
    """One line of progress on `stream` (default stderr), only when it is a terminal."""

    def __init__(self, what: str, total: float | None = None, *, unit: str = "",
                 stream: TextIO | None = None, enabled: bool | None = None,
                 interval_seconds: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.done = 0.0
        self._interval = interval_seconds
        self._clock = clock
        self._started = clock()
        self._drawn_at = -float("inf")
        self._width = 0  # of the last line drawn, to blank what a shorter one leaves

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, done: float, total: float | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if not self.enabled:
            return
        now = self._clock()
        if now - self._drawn_at >= self._interval:
            self._drawn_at = now
            self._draw(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The words of the progress line at `now` (the caller's clock)."""
        elapsed = (self._clock() if now is None else now) - self._started
        unit = f" {self.unit}" if self.unit else ""
        if not self.total:
            return f"{self.what}: {_count(self.done)}{unit}, {duration_words(elapsed)}"
        share = min(1.0, self.done / self.total)
        text = (f"{self.what}: {_count(self.done)}/{_count(self.total)}{unit} "
                f"({share * 100:.0f}%)")
        if 0 < share < 1 and elapsed >= 1.0:
            text += f", about {duration_words(elapsed * (1 - share) / share)} left"
        return text

    def _draw(self, text: str) -> None:
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()

    def close(self, message: str | None = None) -> None:
        """End the line: with `message`, it replaces the progress; without, it is erased."""
        if not self.enabled or (self._width == 0 and message is None):
            return
        self._draw(message or "")
        self.stream.write("\n" if message else "\r")
        self.stream.flush()
        self._width = 0
