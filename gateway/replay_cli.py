"""`plantbridge replay` and `plantbridge record`: run rules on a recording, and capture live
telemetry into one."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime

from gateway import logs
from gateway.cli_base import load_or_report, run_async
from gateway.progress import Progress


def utc_time(text: str) -> float:
    """A time on the command line: seconds since 1970, or ISO 8601 (UTC unless it says)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: write 2026-11-27T08:00 (UTC), 2026-11-27T09:00+01:00 "
            f"or seconds since 1970") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def cmd_replay(args: argparse.Namespace) -> int:
    if args.start is not None and args.end is not None and args.start > args.end:
        print(f"--from ({_iso(args.start)}) is later than --to ({_iso(args.end)}): that window "
              "holds no data; swap them", file=sys.stderr)
        return 2
    from rules import RuleFileError, load_rule_files
    from rules.replay import RecordingError, format_comparison, format_report, pair
    from rules.slabreplay import replay_recording

    try:
        new = load_rule_files(args.rules)
        old = load_rule_files(args.compare) if args.compare else None
    except RuleFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    # Progress by phase (each replay, plot): a replay streams the recording in slabs (a week of
    # 1,000 signals fits in memory); its estimate is the time the first took, for the second.
    steps = 1 + (old is not None) + (args.plot is not None)
    with Progress("replay", total=steps, unit="steps") as bar:
        bar.update(0)
        try:
            result, warning = replay_recording(new, args.input, start=args.start, end=args.end)
            bar.update(1)
            old_result = None if old is None else replay_recording(
                old, args.input, start=args.start, end=args.end)[0]
            bar.update(1 + (old is not None))
            if args.plot is not None:  # drawing needs the samples: the window, read whole
                from gateway.plot import write_plot
                from rules.columns import between
                from rules.pbrec import load_columns

                cols = between(load_columns(args.input), args.start, args.end)
                drawn = write_plot(args.plot, cols, result, new,
                                   None if old is None or old_result is None
                                   else (old_result, old), args.asset or ())
                bar.close()
                print(f"plotted {drawn} rule(s) to {args.plot}", file=sys.stderr)
        except (RecordingError, OSError) as exc:
            bar.close()
            print(exc, file=sys.stderr)
            return 1
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if old_result is not None:
        text = format_comparison(pair(old_result, result))
    else:
        text = format_report(result)
    return _print_to_pipe(text)


def _print_to_pipe(text: str) -> int:
    """Print a report that may go into `| head`: a reader that stops early is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so that the interpreter's own flush at exit finds no
        # broken pipe to complain about (the documented way for Python CLIs).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway.record import NothingToRecord, choose, record

    # Only the sources run: an upstream's token is none of a recording's business.
    loaded = load_or_report(args.config, "{n} problem(s); nothing recorded",
                            config_mod.SecretScope.SOURCES)
    if loaded is None:
        return 1
    try:
        chosen, notes = choose(loaded.config, args.source)
    except NothingToRecord as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    logs.setup("warning")

    async def recording() -> int:
        # The duration is known: progress is the time recorded so far (quiet off a terminal).
        with Progress(f"recording to {args.output}", total=args.duration, unit="s") as bar:
            task = asyncio.create_task(record(chosen, args.output, args.duration))
            started = time.monotonic()
            while not task.done():
                bar.update(min(args.duration, round(time.monotonic() - started)))
                await asyncio.wait({task}, timeout=0.5)
            return task.result()

    n = run_async(recording())
    print(f"recorded {n} samples to {args.output}")
    return 0
