"""`python -m simulators.sap_pm --port P`: run the SAP PM simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from simulators.httpsim import argument_parser, serve_until_signalled
from simulators.sap_pm.server import SERVICE_PATH, SapPmSimulator


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argument_parser("python -m simulators.sap_pm", __doc__)
    p.add_argument("--user", default="PB_COMM")
    p.add_argument("--password", default="secret")
    p.add_argument("--sap-client", default="100")
    p.add_argument("--equipment", action="append", default=None, metavar="NUMBER[=EAMS_FL]",
                   help="a known technical object (repeatable); default: a few samples")
    p.add_argument("--csrf-ttl-seconds", type=float, default=1800.0)
    p.add_argument("--require-if-match", action="store_true",
                   help="PATCH without If-Match gets 428")
    return p.parse_args(argv)


def _equipment(specs: list[str] | None) -> dict[str, str] | None:
    if specs is None:
        return None
    out: dict[str, str] = {}
    for spec in specs:
        number, _, kind = spec.partition("=")
        out[number] = kind or "EAMS_EQUI"
    return out


async def serve(args: argparse.Namespace) -> None:
    sim = SapPmSimulator(args.host, args.port, args.user, args.password, args.sap_client,
                         _equipment(args.equipment), args.csrf_ttl_seconds,
                         require_if_match=args.require_if_match)
    await serve_until_signalled(
        sim, lambda: f"listening on {sim.url}{SERVICE_PATH} (sap-client {args.sap_client})")


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(_args(argv)))


if __name__ == "__main__":
    main()
