"""The ack callback the worker pool hands out with a batch (the in-process source builds a
lighter one per message: `driver._MessageAck`)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


def once_on_loop(loop_of: Callable[[], asyncio.AbstractEventLoop | None], loop_thread: int | None,
                 act: Callable[[], None]) -> Callable[[], None]:
    """`act` as an ack callback: callable from any thread (it runs on the loop's thread) and
    any number of times (it runs once). A loop already closed drops it: the broker redelivers
    what was not acknowledged."""
    done = False

    def call() -> None:
        nonlocal done
        loop = loop_of()
        if threading.get_ident() != loop_thread and loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: the broker redelivers
                loop.call_soon_threadsafe(call)
            return
        if done:
            return
        done = True
        act()

    return call
