"""The benchmark suite: every benchmark, one table, optional JSON rows for comparing commits.

    .venv/bin/python -m benchmarks                 # everything (about 10 minutes), = make bench
    .venv/bin/python -m benchmarks --quick         # each briefly: does it run? (not a figure)
    .venv/bin/python -m benchmarks --only mqtt5 --json /tmp/bench.json

Each benchmark runs in a child process of its own (`--child NAME`), so its peak RSS is its own
and a crash or hang of one costs only its rows (bounded by `--timeout`). Figures are printed,
never asserted: the `met` column compares them with the targets of issue 14.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.rows import Row, peak_rss_mb, table

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCHMARK-ROWS "

# name -> "module:function", in table order; the function is `(quick: bool) -> list[Row]`.
BENCHMARKS: dict[str, str] = {
    "mqtt5": "benchmarks.mqtt_rows:mqtt5",
    "mqtt311": "benchmarks.mqtt_rows:mqtt311",
    "mqtt-batch": "benchmarks.mqtt_rows:mqtt_batch",
    "opcua": "benchmarks.opcua_bench:rows",
    "modbus": "benchmarks.modbus_bench:rows",
    "rules": "benchmarks.rules_bench:rows",
    "state-writes": "benchmarks.state_writes:rows",
    "outbox": "benchmarks.pipeline_bench:rows",
    "drain": "benchmarks.drain_bench:rows",
    "e2e": "benchmarks.daemon_rows:end_to_end",
    "rss": "benchmarks.daemon_rows:rss",
    "ready": "benchmarks.daemon_rows:ready",
    "replay": "benchmarks.rules_bench:replay_rows",
}


def _function(name: str) -> Callable[[bool], list[Row]]:
    module, func = BENCHMARKS[name].split(":")
    got: Callable[[bool], list[Row]] = getattr(importlib.import_module(module), func)
    return got


def child(name: str, quick: bool) -> None:
    """Run one benchmark here and print its rows on one marked line for the parent."""
    rows = _function(name)(quick)
    for row in rows:
        if row.peak_rss_mb is None and row.value is not None:
            row.peak_rss_mb = peak_rss_mb()
    print(MARK + json.dumps([r.to_json() for r in rows]), flush=True)


def run(name: str, quick: bool, timeout: float) -> list[Row]:
    """One benchmark in a child process; a failure becomes a row that says so."""
    cmd = [sys.executable, "-m", "benchmarks", "--child", name] + (["--quick"] if quick else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return [Row(name, None, "", "", None, note=f"error: no result within {timeout:.0f} s")]
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            return [Row.from_json(r) for r in json.loads(line[len(MARK):])]
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    print(f"{name}: failed after {time.monotonic() - started:.0f} s, exit {done.returncode}:\n"
          f"{done.stderr[-3000:]}", file=sys.stderr)
    return [Row(name, None, "", "", None, note=f"error: {tail[:100]}")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    p.add_argument("--quick", action="store_true", help="run each briefly (smoke test)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows here")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds per benchmark (default 600, 180 with --quick)")
    p.add_argument("--child", choices=list(BENCHMARKS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.quick)
        return 0
    timeout = args.timeout or (180.0 if args.quick else 600.0)
    rows: list[Row] = []
    for name in args.only or list(BENCHMARKS):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += run(name, args.quick, timeout)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=2) + "\n")
    return 1 if any(r.note.startswith("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
