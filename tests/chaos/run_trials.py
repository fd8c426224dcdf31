"""Run a long series of crash trials and print what they found.

    .venv/bin/python -m tests.chaos.run_trials --trials 300 [--assets 8] [--seed N]
        [--upstream rest|sap_pm|maximo] [--profile continuous|delays] [--workers 0|1]

`--profile delays`: sensors report by exception, rules have on/off delays and maintenance
mutes, so kills land while a delay is pending or an asset is muted (issue 10).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.chaos.trials import run_crash_trials


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--assets", type=int, default=8)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--upstream", choices=["rest", "sap_pm", "maximo"], default="rest")
    p.add_argument("--profile", choices=["continuous", "delays"], default="continuous")
    p.add_argument("--workers", type=int, default=0, choices=(0, 1),
                   help="MQTT ingest in the daemon (0) or a worker process (1): the source's "
                        "`workers`")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="plantbridge-chaos-") as tmp:
        report = asyncio.run(run_crash_trials(Path(tmp), args.trials, args.assets, args.seed,
                                                  upstream=args.upstream,
                                                  profile=args.profile,
                                                  workers=args.workers))
    print(report.summary())
    for label, items in (("duplicated", report.duplicates), ("missing", report.missing),
                         ("out of order", report.order_violations)):
        for item in items[:20]:
            print(f"  {label}: {item}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
