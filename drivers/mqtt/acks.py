"""The ack callbacks the MQTT sources hand out with a batch: one per message in process
(`driver._MessageAck`), one per batch token from a worker (`once_on_loop`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


class LoopAck:
    """An ack callback: callable from any thread (it runs on the loop's thread) and any number
    of times (it acts once). A loop that is gone drops it: the broker redelivers what was not
    acknowledged. Subclasses say which loop (`loop`) and what to do (`act`). One small object
    per ack: the in-process source builds one for every message."""

    __slots__ = ("_done", "_thread")

    def __init__(self, loop_thread: int | None) -> None:
        self._thread = loop_thread
        self._done = False

    def loop(self) -> asyncio.AbstractEventLoop | None:
        raise NotImplementedError

    def act(self) -> None:
        raise NotImplementedError

    def __call__(self) -> None:
        if threading.get_ident() != self._thread:
            loop = self.loop()
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # loop closed: the broker redelivers
                    loop.call_soon_threadsafe(self)
            return
        if self._done:
            return
        self._done = True
        self.act()


class _Once(LoopAck):
    __slots__ = ("_act", "_loop_of")

    def __init__(self, loop_of: Callable[[], asyncio.AbstractEventLoop | None],
                 loop_thread: int | None, act: Callable[[], None]) -> None:
        super().__init__(loop_thread)
        self._loop_of = loop_of
        self._act = act

    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop_of()

    def act(self) -> None:
        self._act()


def once_on_loop(loop_of: Callable[[], asyncio.AbstractEventLoop | None], loop_thread: int | None,
                 act: Callable[[], None]) -> Callable[[], None]:
    """`act` as a `LoopAck`."""
    return _Once(loop_of, loop_thread, act)
