"""Child process for the crash tests, run as
`python -m tests.buffer.crash_writer PATH FIRST_BATCH [commit|deliver]`.

`commit`: commits numbered batches forever, printing each number once its commit returned.
`deliver`: also leases and settles (ACCEPTED) what it finds after each commit, printing
`settled ID...` once the settle returned.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from buffer.store import OutboxStore
from gateway.model import Delivery, Outcome, TransitionKind
from tests.buffer.conftest import message, transition


def batch_size(i: int) -> int:
    return 1 + (i * 7) % 40


async def main(path: Path, first: int, deliver: bool) -> None:
    store = await OutboxStore.open(path)
    i = first
    while True:
        await store.commit(
            [transition(TransitionKind.RAISED, f"ep-{i}", asset=f"a{i}", ts=float(i))],
            [message(f"b{i}-{j}", asset=f"a{i}", episode_id=f"ep-{i}",
                     body={"i": i, "j": j, "pad": "p" * 300}) for j in range(batch_size(i))])
        print(i, flush=True)
        if deliver:
            recs = await store.lease("cmms", 50, 1e12)
            await store.settle([Delivery(r.id, Outcome.ACCEPTED) for r in recs], 1e9)
            print("settled", *(r.id for r in recs), flush=True)
        i += 1


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else "commit"
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), deliver=mode == "deliver"))
