"""`python -m simulators.cmms --port P [--api-key K]`: run the simulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from simulators.cmms.server import CmmsSimulator


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m simulators.cmms", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
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
    sim = CmmsSimulator(args.host, args.port, args.api_key, args.idempotency_mode,
                        args.key_ttl_seconds, state_file=args.state_file,
                        rate_limit_per_second=args.rate_limit_per_second,
                        rate_limit_burst=args.rate_limit_burst)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    try:
        print(f"listening on {sim.url}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(_args(argv)))


if __name__ == "__main__":
    main()
