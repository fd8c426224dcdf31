"""What the issue 10 black-box tests share: rule texts, the fence rule, count expectations.

The daemon, broker and simulator plumbing is `tests/e2e/stack.py`; this is only what the
"never zero, never two" tests (`test_never_twice*.py`, `tests/chaos/`) say and check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from tests.harness import wait_for

# After a sample is counted its group's commit is still to come (milliseconds; a loaded 2-core
# box may take a few hundred): how long "nothing was committed" checks wait for it.
COMMIT_GRACE_SECONDS = 1.0

# A rule of its own for fence samples (`Stack.fence`): any value raises a request at once.
FENCE_RULE = """
[[rule]]
id = "fence"
kind = "threshold"
asset_pattern = "fence-*"
signal = "fence"
above = 0
title = "Fence {asset}"
"""


def threshold_rule(rule_id: str, signal: str, *, above: float = 7.1, clear_below: float = 6.0,
                   asset: str = "pump-1", extra: str = "") -> str:
    """One threshold rule on one asset; `extra` adds TOML lines (delays, counts, mutes)."""
    return f"""
[[rule]]
id = "{rule_id}"
kind = "threshold"
asset = "{asset}"
signal = "{signal}"
above = {above}
clear_below = {clear_below}
title = "{rule_id} on {{asset}}"
{extra}
"""


async def expect_exactly(n: int, items: Callable[[], list[dict[str, Any]]], what: str,
                         within: float, drained: Callable[[], Awaitable[None]]) -> list[
                             dict[str, Any]]:
    """Wait (up to `within` s) until `items()` holds `n`, then until nothing more can arrive
    (`drained`), and assert it holds exactly `n`: "expected exactly 1 request for pump-1, got 0"."""
    with contextlib.suppress(AssertionError):  # the count below says what went wrong
        await wait_for(lambda: len(items()) >= n, within, what)
    await drained()
    got = items()
    seen = Counter(str(g["body"].get("title") or g["body"].get("status")) for g in got)
    assert len(got) == n, f"expected exactly {n} {what}, got {len(got)}: {dict(seen)}"
    return got


async def sleep_until(wall_time: float) -> None:
    """Scheduling, not synchronisation: act at a chosen moment (a restart 1 s into a delay)."""
    await asyncio.sleep(max(0.0, wall_time - time.time()))


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
