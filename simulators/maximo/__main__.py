"""`python -m simulators.maximo --port P [--api-key K]`: run the simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio

from simulators.httpsim import argument_parser, serve_until_signalled
from simulators.maximo.server import DEMO_ASSETS, MaximoSimulator


def _asset(text: str) -> tuple[str, str]:
    assetnum, sep, siteid = text.partition("@")
    if not sep or not assetnum or not siteid:
        raise argparse.ArgumentTypeError(f"expected ASSETNUM@SITEID, got {text!r}")
    return assetnum, siteid


def _domain(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,3,5, got {text!r}") from exc


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argument_parser("python -m simulators.maximo", __doc__)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--api-root", default="/maximo/api", help='7.6 style: "/maximo/oslc"')
    p.add_argument("--asset", type=_asset, action="append", default=None,
                   metavar="ASSETNUM@SITEID",
                   help="a known asset (repeat); default: PUMP-1, PUMP-2, FAN-1 @ BEDFORD")
    p.add_argument("--any-asset", action="store_true", help="accept every assetnum")
    p.add_argument("--priority-domain", type=_domain, default=(1, 2, 3, 4, 5),
                   help="allowed reportedpriority values, e.g. 1,3,5")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    assets = None if args.any_asset else dict(args.asset) if args.asset else DEMO_ASSETS
    sim = MaximoSimulator(args.host, args.port, args.api_key, assets, args.priority_domain,
                          api_root=args.api_root)
    await serve_until_signalled(sim, lambda: f"listening on {sim.url}{sim.api_root}/os/mxapisr")


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(_args(argv)))


if __name__ == "__main__":
    main()
