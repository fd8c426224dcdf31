"""Running a relay: build the sinks from config, serve the status page, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aiohttp
import nats.errors
import nats.js.errors
from aiohttp import web

from gateway.http import dumps
from gateway.model import Sink
from gateway.relay.config import RelayConfig
from gateway.relay.fleet import fleet_text
from gateway.relay.relay import Relay
from gateway.relay.status import build_relay_app
from gateway.sdnotify import SystemdNotifier

log = logging.getLogger("plantbridge.relay")


async def run_relay(cfg: RelayConfig) -> None:
    sinks: list[Sink] = [u.build() for u in cfg.upstreams]
    relay = Relay(cfg, sinks)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, relay.request_stop)
    runner: web.AppRunner | None = None
    if cfg.http.enabled:
        runner = web.AppRunner(build_relay_app(relay), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, cfg.http.listen_host, cfg.http.port).start()
    notifier = SystemdNotifier()
    task = asyncio.create_task(relay.run(), name="relay")
    ready = asyncio.create_task(relay.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if relay.ready.is_set():
        notifier.notify("READY=1")
    ready.cancel()
    try:
        await task
    except nats.js.errors.NotFoundError:
        log.error("stream %r does not exist: the hub stream must be created first "
                  "(docs/fleet.md)", cfg.consumer.stream)
        raise SystemExit(2) from None
    except (nats.errors.Error, OSError) as exc:
        log.error("cannot use the NATS backbone at %s: %s", ", ".join(cfg.nats.servers),
                  str(exc) or type(exc).__name__)
        raise SystemExit(1) from None
    finally:
        notifier.notify("STOPPING=1")
        if runner is not None:
            await runner.cleanup()


async def print_fleet(cfg: RelayConfig, as_json: bool = False) -> int:
    """`plantbridge relay --fleet`: the running relay's fleet view, as a table (or JSON)."""
    url = f"http://{cfg.http.listen_host}:{cfg.http.port}/fleet?format=json"
    try:
        async with aiohttp.ClientSession() as http, http.get(
                url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            rows = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"no relay answers on {url}: {exc}")
        return 1
    print(dumps(rows).decode() if as_json else fleet_text(rows))
    return 0
