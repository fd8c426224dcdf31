"""`plantbridge`: run the daemon, check a config, replay rules on a recording, run the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import logs, shelve_cli
from gateway.check_cli import cmd_check, validate_identities
from gateway.cli_base import DEFAULT_CONFIG, load_or_report, run_async
from gateway.outbox_cli import (
    REQUEUE_CHUNK,
    cmd_dead_letters,
    cmd_outbox,
    cmd_reconcile,
    cmd_trace,
)
from gateway.relay_cli import cmd_demo, cmd_relay, cmd_status
from gateway.replay_cli import cmd_record, cmd_replay, utc_time

# The subcommands live one group a module (check_cli, replay_cli, outbox_cli, relay_cli,
# shelve_cli); these names stay importable from here, as shelve_cli and the tests import them.
__all__ = [
    "DEFAULT_CONFIG", "REQUEUE_CHUNK", "build_parser", "cmd_check", "cmd_dead_letters",
    "cmd_demo", "cmd_outbox", "cmd_reconcile", "cmd_record", "cmd_relay", "cmd_replay",
    "cmd_run", "cmd_status", "cmd_trace", "load_or_report", "main", "run_async", "utc_time",
    "validate_identities",
]


def cmd_run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config, "refusing to start on an invalid config")
    if loaded is None:
        return 1
    g = loaded.config.gateway
    logs.setup(g.log_level, g.log_format)
    from buffer.errors import OutboxForeignFile, OutboxLocked, OutboxSchemaTooNew
    from gateway.daemon import Daemon

    async def main() -> int:
        try:
            await Daemon(loaded).run()
        except (OutboxSchemaTooNew, OutboxForeignFile, OutboxLocked) as exc:
            logging.getLogger("plantbridge").error("refusing to start: %s", exc)
            return 2
        return 0

    return run_async(main())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantbridge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the gateway in the foreground")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a config and its rule files")
    c.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    c.add_argument("--explain", action="store_true", help="print the Modbus read plan")
    c.add_argument("--online", action="store_true",
                   help="also contact every upstream (reachable, credentials accepted) and "
                        "look every mapped asset up in its EAM (SAP, Maximo)")
    c.add_argument("--rules-only", action="store_true",
                   help="only the rules: no secrets, no other part of the config is judged")
    c.add_argument("--rules", type=Path, nargs="+", metavar="FILE",
                   help="with --rules-only: these rule files, without any main config")
    c.set_defaults(func=cmd_check)

    rp = sub.add_parser("replay", help="run rules on a recording and print what they do")
    rp.add_argument("--rules", type=Path, nargs="+", required=True)
    rp.add_argument("--input", type=Path, required=True,
                    help="recording: .pbrec (what `record` writes), JSON lines or .csv")
    rp.add_argument("--compare", type=Path, nargs="+", help="old rule files to compare with")
    rp.add_argument("--from", dest="start", type=utc_time, metavar="TIME",
                    help="only data from this time on (ISO such as 2026-11-27T08:00, UTC unless "
                         "it names an offset; or seconds since 1970); rules start clean there")
    rp.add_argument("--to", dest="end", type=utc_time, metavar="TIME",
                    help="only data up to this time")
    rp.add_argument("--plot", type=Path, metavar="FILE",
                    help="also draw each rule that raised (or the rules of --asset): its signal, "
                         "levels and raises/clears; FILE.html or FILE.svg")
    rp.add_argument("--asset", nargs="+", metavar="ASSET",
                    help="with --plot: draw every rule of these assets (raised or not), only")
    rp.set_defaults(func=cmd_replay)

    rec = sub.add_parser("record", help="capture live telemetry to a recording file")
    rec.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rec.add_argument("--output", type=Path, required=True,
                     help=".pbrec (compact, fast to replay), .csv, or JSON lines (any other name)")
    rec.add_argument("--duration", type=float, default=60.0, help="seconds")
    rec.add_argument("--source", nargs="+", metavar="NAME",
                     help="only these sources (default: all but serial Modbus lines)")
    rec.set_defaults(func=cmd_record)

    dl = sub.add_parser("dead-letters", help="list, requeue or drop what an upstream refused")
    dl.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dl.add_argument("--sink", help="only this upstream")
    what = dl.add_mutually_exclusive_group()
    what.add_argument("--requeue", nargs="+", metavar="ID", help="record ids, or: all")
    what.add_argument("--drop", nargs="+", type=int, metavar="ID", help="record ids")
    dl.set_defaults(func=cmd_dead_letters)

    tr = sub.add_parser("trace", help="one event's whole life: raise, deliveries, receipt, clear")
    tr.add_argument("id", metavar="ID",
                    help="episode id, idempotency key, PB... reference or upstream id (WR-1)")
    tr.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(func=cmd_trace)
    add_outbox_parser(sub)
    shelve_cli.add_parsers(sub, DEFAULT_CONFIG)  # shelve, unshelve, shelved

    st = sub.add_parser("status", help="what the running gateway says: problems, upstreams, "
                                       "open conditions, dead letters")
    st.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    st.add_argument("--json", action="store_true", help="the daemon's /status as it is")
    st.set_defaults(func=cmd_status)
    rl = sub.add_parser("relay", help="fleet tier: forward events from NATS JetStream to the EAM")
    rl.add_argument("--config", type=Path, default=Path("/etc/plantbridge/relay.toml"))
    rl.add_argument("--fleet", action="store_true",
                    help="print the gateways the running relay has seen, and exit")
    rl.add_argument("--dead-letters", action="store_true",
                    help="list the dead-letter stream (sequence, subject, upstream, reason)")
    rl.add_argument("--requeue", nargs="+", type=int, metavar="SEQ",
                    help="send these dead letters to the hub stream again")
    rl.add_argument("--trace", metavar="EPISODE_OR_KEY",
                    help="what the relays did with one event (episode id, outbox key or "
                         "Nats-Msg-Id): received, attempts, upstream answers, ack, dead letter")
    rl.add_argument("--json", action="store_true", help="with --trace or --fleet: JSON")
    rl.set_defaults(func=cmd_relay)

    rc = sub.add_parser("reconcile", help="compare the requests of a window with what each "
                                          "upstream holds; --fix sends missing ones again")
    rc.add_argument("--since", default="7d", help="window: 7d, 12h, 30m (default 7d)")
    rc.add_argument("--fix", action="store_true",
                    help="re-enqueue requests missing upstream (the running gateway sends them)")
    rc.add_argument("--json", action="store_true")
    rc.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    rc.set_defaults(func=cmd_reconcile)

    d = sub.add_parser("demo", help="play a bearing failure against bundled simulators")
    d.add_argument("--duration", type=float, default=30.0, help="seconds")
    d.add_argument("--scenario", default="bearing-failure")
    d.set_defaults(func=cmd_demo)
    return p


def add_outbox_parser(sub: Any) -> None:
    ob = sub.add_parser("outbox", help="list, export or drop undelivered records; downgrade "
                        "the file for an older release")
    acts = ob.add_subparsers(dest="action", required=True)
    for name, helptext in (("list", "what is not delivered yet (pending and dead)"),
                           ("export", "write records as JSON lines with body and last error")):
        a = acts.add_parser(name, help=helptext)
        a.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        a.add_argument("--sink", help="only this upstream")
        a.add_argument("--asset", help="only this asset")
        a.add_argument("--dead", action="store_true", help="only dead letters")
        if name == "export":
            a.add_argument("file", metavar="FILE", type=Path)
            a.set_defaults(json=False)
        else:
            a.add_argument("--json", action="store_true", help="one JSON object a line")
    ack = acts.add_parser("acknowledge", help="clear the notices of a damaged outbox from the "
                          "status page, once you have read them")
    ack.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dr = acts.add_parser("drop", help="delete undelivered records for good")
    dr.add_argument("ids", nargs="+", type=int, metavar="ID")
    dr.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    dr.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    dg = acts.add_parser("downgrade", help="with the daemon stopped: take the outbox file back "
                         "to the schema of an older release, to roll back to it")
    dg.add_argument("--to", type=int, required=True, metavar="VERSION",
                    help="the schema version the older release knows (its refusal names it)")
    dg.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ob.set_defaults(func=cmd_outbox)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
