"""Child process for the lock tests: `python -m tests.buffer.lock_holder PATH` opens the outbox
with the lock, prints `locked` and then holds it until killed."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from buffer.store import OutboxStore


async def main(path: Path) -> None:
    store = await OutboxStore.open(path, lock=True)
    try:
        print("locked", flush=True)
        await asyncio.Event().wait()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
