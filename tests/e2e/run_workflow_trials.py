"""Kill -9 the daemon between the steps of the maintenance workflow, many times.

    .venv/bin/python -m tests.e2e.run_workflow_trials --upstream sap|rest|maximo|all \
        --trials N [--seed S]

Each trial kills the daemon right after one step committed at the upstream's simulator (half of
them with that step's answer lost too), restarts it, and checks every step happened exactly
once. Without --seed the kill points cycle in order, as in `make test`; with it, each round of
kill points is shuffled and also kills with the step's request still in flight (it commits after
the kill). `--late-window 8` adds kills whose request commits only once the restarted daemon
runs (the sinks must wait their unclear window before looking it up); each costs the window.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.e2e.workflow_trials import random_plan, run_workflow_trials, suite_plan
from tests.e2e.workflow_trials_upstreams import UPSTREAMS
from tests.harness import Mosquitto, free_port


async def _run(tmp: Path, names: list[str], trials: int, seed: int | None,
               late_window: float | None) -> int:
    broker = Mosquitto(port=free_port(), workdir=tmp)
    broker.start()
    failed = 0
    try:
        for name in names:
            up = UPSTREAMS[name]()
            if late_window is not None:
                up.unclear_seconds = late_window
            plan = suite_plan(up, trials) if seed is None and late_window is None \
                else random_plan(up, trials, seed, late=late_window is not None)
            where = tmp / name
            where.mkdir()
            report = await run_workflow_trials(up, where, broker, plan)
            print(report.summary(), flush=True)
            for failure in report.failures[:20]:
                print(f"  {failure}")
            for said in report.inconclusive[:5]:
                print(f"  inconclusive: {said}")
            failed += len(report.failures)
    finally:
        broker.stop()
    return 0 if failed == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstream", choices=[*UPSTREAMS, "all"], default="all")
    p.add_argument("--trials", type=int, default=20, help="per upstream")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--late-window", type=float, default=None, metavar="SECONDS",
                   help="also let a killed daemon's request commit only after the restart "
                        "(the sinks' unclear window is set to SECONDS, longer than a restart)")
    p.add_argument("--keep", type=Path, default=None,
                   help="run in this directory and keep it (daemon logs, state)")
    args = p.parse_args()
    if args.trials < 1:
        p.error("--trials must be at least 1")
    names = list(UPSTREAMS) if args.upstream == "all" else [args.upstream]
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(args.keep, names, args.trials, args.seed,
                                    args.late_window))
    with tempfile.TemporaryDirectory(prefix="plantbridge-workflow-") as tmp:
        return asyncio.run(_run(Path(tmp), names, args.trials, args.seed,
                                    args.late_window))


if __name__ == "__main__":
    sys.exit(main())
