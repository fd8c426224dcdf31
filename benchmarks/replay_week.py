"""The suite's replay row: a week of 1 Hz on 1,000 signals through `plantbridge replay`.

Issue 14's target is "replay a week of 1 Hz on 1,000 signals: < 120 s, peak RSS < 1 GB". This
measures exactly that path: the week (the benchmark data of `rules_bench`, 604.8 M samples) is
written to a `.pbrec` an hour at a time (bounded memory), then `plantbridge replay --rules R
--input F` runs in a child process, which streams the file in slabs
(`rules.slabreplay.replay_recording`). Figures: the child's wall-clock seconds and its peak
RSS (`RUSAGE_CHILDREN`: the largest resident set of any child this process waited for, and the
replay is the only one); its CPU seconds and the load average go in the note, because on a
shared box the wall clock also measures the neighbours.

Bounded: the file needs ~12.7 GB, so the row says so (no figure) when the disk has less free;
the replay child is killed after `REPLAY_TIMEOUT_SECONDS`. `PB_BENCH_DIR` picks the directory
for the file; `PB_REPLAY_RECORDING=FILE` replays (and first writes, if missing) a kept file, so
repeated runs skip the write.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BYTES_PER_SAMPLE = 21.0  # .pbrec on disk, measured (rules_bench prints it)
REPLAY_TIMEOUT_SECONDS = 360.0  # 3x the target: a replay that slow is a finding, not a hang


@dataclass(slots=True)
class WeekRun:
    """What one run measured; `problem` set (and no figures) when it could not run."""

    hours: float
    samples: int
    write_seconds: float | None = None
    replay_seconds: float | None = None
    peak_rss_mb: float | None = None
    replayed: int | None = None  # samples the replay says it saw (the whole week?)
    cpu_seconds: float | None = None  # the child's user + system CPU time
    load: float | None = None  # the 1-minute load average when it ended (a shared box?)
    problem: str = ""


def run_week(hours: float, rules_text: str, n_assets: int = 250) -> WeekRun:
    """Write `hours` of the benchmark data (4 signals an asset) and replay it with the CLI."""
    from benchmarks.replay_bench import write_long
    from benchmarks.rules_bench import SIGNALS, assets

    seconds = int(hours * 3600)
    names = assets(n_assets)
    run = WeekRun(hours, seconds * len(names) * len(SIGNALS))
    kept = os.environ.get("PB_REPLAY_RECORDING")
    with tempfile.TemporaryDirectory(dir=os.environ.get("PB_BENCH_DIR")) as tmp:
        path = Path(kept) if kept else Path(tmp) / "week.pbrec"
        if not path.exists():
            need = run.samples * BYTES_PER_SAMPLE * 1.05
            free = shutil.disk_usage(path.parent).free
            if free < need:
                run.problem = (f"needs {need / 1e9:.1f} GB free in {path.parent}, has "
                               f"{free / 1e9:.1f} GB (set PB_BENCH_DIR)")
                return run
            start = time.perf_counter()
            write_long(path, names, seconds)
            run.write_seconds = time.perf_counter() - start
        rules = Path(tmp) / "rules.toml"
        rules.write_text(rules_text)
        _replay(run, rules, path)
    return run


def _replay(run: WeekRun, rules: Path, recording: Path) -> None:
    """`plantbridge replay` on the recording in a child process: seconds and peak RSS."""
    cli = Path(sys.executable).parent / "plantbridge"
    cmd = ([str(cli)] if cli.exists()
           else [sys.executable, "-c", "import sys; from gateway.cli import main; "
                 "sys.exit(main())"])
    cmd += ["replay", "--rules", str(rules), "--input", str(recording)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=REPLAY_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        run.problem = f"replay not done within {REPLAY_TIMEOUT_SECONDS:.0f} s (killed)"
        return
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        run.problem = f"replay exit {done.returncode}: {tail[:120]}"
        return
    run.replay_seconds = seconds
    # Linux reports kB; the replay is the only child this process has waited for.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.peak_rss_mb = usage.ru_maxrss / 1024
    run.cpu_seconds = usage.ru_utime + usage.ru_stime  # what other load cannot inflate
    run.load = os.getloadavg()[0]
    head = done.stdout.split(maxsplit=2)  # "replayed N samples from ..."
    if len(head) > 1 and head[0] == "replayed" and head[1].isdigit():
        run.replayed = int(head[1])
