"""`plantbridge outbox`, `dead-letters`, `trace` and `reconcile`: look into the outbox and act
on what it holds (list, export, drop, requeue, follow one event, compare with upstreams)."""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from gateway import config as config_mod
from gateway import logs, shelve_cli
from gateway.cli_base import load_or_report, run_async
from gateway.progress import Progress


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway.dead_letters import manage

    loaded = load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                            config_mod.SecretScope.NONE)
    if loaded is None:
        return 1
    if args.requeue and args.requeue != ["all"] and not all(x.isdigit() for x in args.requeue):
        print("--requeue takes record ids or the word all", file=sys.stderr)
        return 2
    if args.requeue:
        print(run_async(_requeue(loaded.config, args.requeue, args.sink)))
        return 0
    print(run_async(manage(loaded.config, [], args.drop or [], args.sink)))
    return 0


REQUEUE_CHUNK = 500


async def _requeue(cfg: config_mod.PlantBridgeConfig, which: list[str], sink: str | None) -> str:
    """`dead-letters --requeue`: in chunks, so a terminal shows progress on thousands."""
    async with await cfg.buffer.build(cfg.gateway.state_dir) as store:
        ids = ([d.id for d in await store.dead_letters(sink, limit=1_000_000)]
               if which == ["all"] else [int(x) for x in which])
        n = 0
        with Progress("requeueing dead letters", total=len(ids)) as bar:
            for at in range(0, len(ids), REQUEUE_CHUNK):
                n += await store.requeue_dead(ids[at:at + REQUEUE_CHUNK])
                bar.update(min(len(ids), at + REQUEUE_CHUNK))
    return f"requeued {n} dead letter(s); the daemon delivers them on its next round"


def cmd_trace(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway import trace

    loaded = load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                            config_mod.SecretScope.NONE)
    if loaded is None:
        return 1
    found = run_async(trace.load(loaded.config, args.id))
    if found is None:
        print(f"{args.id}: no episode, idempotency key or upstream id of that name in the "
              "outbox (or it is past the retention)", file=sys.stderr)
        return 1
    upstream = run_async(trace.upstream_history(loaded.config, found.episode_id))
    rolled_up = run_async(shelve_cli.rollup_note(loaded.config, found.episode_id))
    if args.json:
        doc = trace.as_dict(found, upstream) | ({"rolled_up": rolled_up} if rolled_up else {})
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print(trace.format_text(found, upstream) + (f"\n  {rolled_up}" if rolled_up else ""))
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from gateway import config as config_mod
    from gateway import outbox_tools as tools

    loaded = load_or_report(args.config, "{n} problem(s); the outbox was not opened",
                            config_mod.SecretScope.NONE)
    if loaded is None:
        return 1
    cfg = loaded.config
    if args.action == "drop":
        return _outbox_drop(cfg, args.ids, args.yes)
    if args.action == "downgrade":
        return _outbox_downgrade(cfg, args.to)
    if args.action == "acknowledge":
        n = run_async(tools.acknowledge(cfg))
        print(f"acknowledged {n} notice(s)" if n else "no notice to acknowledge")
        return 0
    exporting = args.action == "export"
    found = run_async(tools.records(cfg, sink=args.sink, asset=args.asset, dead=args.dead,
                                    bodies=exporting or args.json))
    if exporting:
        try:
            tools.write_json_lines(found, args.file)
        except OSError as exc:
            print(f"cannot write {args.file}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(found)} record(s) to {args.file}")
    elif args.json:
        for rec in found:
            print(orjson.dumps(tools.as_dict(rec), default=str).decode())
    else:
        print(tools.format_list(found))
    return 0


def _outbox_downgrade(cfg: config_mod.PlantBridgeConfig, target: int) -> int:
    """Take the file back to an older release's schema, or say why not (nothing changed)."""
    from buffer.errors import OutboxError
    from buffer.schema import LATEST, CannotDowngrade
    from gateway import outbox_tools as tools

    try:
        was, path = run_async(tools.downgrade(cfg, target))
    except (CannotDowngrade, OutboxError) as exc:  # OutboxLocked: the daemon runs
        print(f"outbox not changed: {exc}", file=sys.stderr)
        return 1
    if was <= target:
        print(f"outbox {path} is at schema {was}: nothing to do")
    else:
        print(f"outbox {path}: schema {was} -> {target}. A release that knows schema {target} "
              f"can open it now. Any command of this release (schema {LATEST}) that opens the "
              "outbox (run, outbox list, trace, dead-letters) migrates it forward again")
    return 0


def _outbox_drop(cfg: config_mod.PlantBridgeConfig, ids: list[int], yes: bool) -> int:
    """Drop undelivered records, after a yes from a person at a terminal (or --yes)."""
    from gateway import outbox_tools as tools

    if not yes:
        if not sys.stdin.isatty():
            print("refusing to drop without confirmation: no terminal to ask; pass --yes",
                  file=sys.stderr)
            return 2
        wanted = set(ids)
        found = [r for r in run_async(tools.records(cfg)) if r.id in wanted]
        if not found:
            print("none of these ids is an undelivered record; nothing dropped")
            return 1
        print(tools.format_list(found))
        answer = input(f"drop these {len(found)} record(s) for good? They will never be "
                       "delivered. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing dropped")
            return 1
    n = run_async(tools.drop(cfg, ids))
    print(f"dropped {n} record(s) for good")
    return 0 if n else 1


def cmd_reconcile(args: argparse.Namespace) -> int:
    from gateway import reconcile

    try:
        window = reconcile.parse_window(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    loaded = load_or_report(args.config, "{n} problem(s); nothing was compared")
    if loaded is None:
        return 1
    logs.setup("warning")

    bar = Progress("comparing requests", enabled=None if not args.json else False)

    def progress(n: int, total: int) -> None:
        bar.update(n, total)

    with bar:
        report = run_async(reconcile.run_reconcile(
            loaded, window, fix=args.fix, now=time.time(),
            progress=progress if bar.enabled else None))
    if args.json:
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(reconcile.format_text(report))
    # 0: all agree; 1: differences (or an upstream not checked): a cron job can alert on it
    return 1 if report.findings or report.errors else 0
