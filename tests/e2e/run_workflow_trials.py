"""Kill -9 the daemon between the steps of the bearing workflow, many times.

    .venv/bin/python -m tests.e2e.run_workflow_trials --trials 20 [--seed N]

Each trial kills the daemon right after one step committed at the SAP simulator (half of them
with that step's answer lost too), restarts it, and checks every step happened exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.e2e.workflow_trials import random_plan, run_workflow_trials
from tests.harness import Mosquitto, free_port


async def _run(tmp: Path, trials: int, seed: int | None) -> int:
    broker = Mosquitto(port=free_port(), workdir=tmp)
    broker.start()
    try:
        report = await run_workflow_trials(tmp, broker, random_plan(trials, seed))
    finally:
        broker.stop()
    print(report.summary())
    for failure in report.failures[:20]:
        print(f"  {failure}")
    return 0 if report.ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="plantbridge-workflow-") as tmp:
        return asyncio.run(_run(Path(tmp), args.trials, args.seed))


if __name__ == "__main__":
    sys.exit(main())
