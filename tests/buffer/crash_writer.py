"""Child process for the crash test: commits numbered batches forever, printing each number
once its commit returned. `python -m tests.buffer.crash_writer PATH FIRST_BATCH`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from buffer.store import OutboxStore
from gateway.model import TransitionKind
from tests.buffer.conftest import message, transition


def batch_size(i: int) -> int:
    return 1 + (i * 7) % 40


async def main(path: Path, first: int) -> None:
    store = await OutboxStore.open(path)
    i = first
    while True:
        await store.commit(
            [transition(TransitionKind.RAISED, f"ep-{i}", asset=f"a{i}", ts=float(i))],
            [message(f"b{i}-{j}", asset=f"a{i}", episode_id=f"ep-{i}",
                     body={"i": i, "j": j, "pad": "p" * 300}) for j in range(batch_size(i))])
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
