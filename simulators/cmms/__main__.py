"""`python -m simulators.cmms --port P [--api-key K]`: run the simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
from pathlib import Path

from simulators.cmms.server import CmmsSimulator
from simulators.httpsim import argument_parser, serve_until_signalled


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argument_parser("python -m simulators.cmms", __doc__)
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--idempotency-mode", choices=["ietf", "stripe"], default="ietf")
    p.add_argument("--key-ttl-seconds", type=float, default=86400.0)
    p.add_argument("--state-file", type=Path, default=None,
                   help="keep requests and idempotency keys across restarts of this process")
    p.add_argument("--rate-limit-per-second", type=float, default=None,
                   help="token-bucket rate limit: 429 with Retry-After past it")
    p.add_argument("--rate-limit-burst", type=int, default=10)
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    # What the simulator stores (requests, updates, idempotency keys) only grows, and a full
    # collection walks all of it: at 100,000 requests a pause of 0.4-0.8 s mid-drain, which a
    # client sees as the upstream's latency. Full collections here are made rare (1 in 1,000
    # middle-generation ones, not 1 in 10); young garbage is still collected as usual.
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 1000)
    sim = CmmsSimulator(args.host, args.port, args.api_key, args.idempotency_mode,
                        args.key_ttl_seconds, state_file=args.state_file,
                        rate_limit_per_second=args.rate_limit_per_second,
                        rate_limit_burst=args.rate_limit_burst)
    await serve_until_signalled(sim, lambda: f"listening on {sim.url}")


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(_args(argv)))


if __name__ == "__main__":
    main()
