"""`plantbridge status [--json]`: what the running daemon says about itself, for a terminal.

It asks the daemon's own `/status` endpoint (address and token from the config), so it shows
exactly what the page shows, and works beside a running gateway without touching its files.
Exit status, as `systemctl status` has it: 0 nothing wrong, 1 problems (or cannot ask), 3 the
gateway is not running.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from typing import Any

import orjson

from gateway.config import PlantBridgeConfig
from gateway.http import age_words, request_ids
from gateway.identity_probe import status_lines

NOT_RUNNING = 3
TIMEOUT_SECONDS = 10.0


def status_url(cfg: PlantBridgeConfig) -> str:
    """Where the daemon answers: a wildcard listen address is asked on loopback."""
    host = cfg.http.listen_host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{cfg.http.port}/status"


def fetch(cfg: PlantBridgeConfig) -> tuple[int, dict[str, Any] | str]:
    """(0, the daemon's /status) or (exit code, a plain message saying why not)."""
    if not cfg.http.enabled:
        return 1, ("the gateway's HTTP endpoint is off ([http] enabled = false): status asks "
                   "it; turn it on, or read `journalctl -u plantbridge`")
    if cfg.http.port == 0:
        return 1, "[http] port = 0 (a random port): set a fixed port so status can find it"
    url = status_url(cfg)
    headers = {"Accept": "application/json"}
    if cfg.http.token is not None:
        try:
            headers["Authorization"] = f"Bearer {cfg.http.token.reveal()}"
        except ValueError as exc:
            return 1, f"cannot read the [http] token: {exc}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=TIMEOUT_SECONDS) as resp:
            return 0, dict(orjson.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            return 1, f"{url} refused the token (HTTP 401): is [http] token the one it runs with?"
        return 1, f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return NOT_RUNNING, (f"the gateway is not running: nothing answers on {url} "
                                 "(start it with: systemctl start plantbridge)")
        return NOT_RUNNING, f"the gateway does not answer on {url}: {reason}"
    except orjson.JSONDecodeError:
        return 1, f"{url} did not answer JSON: is something else listening on that port?"


def format_text(s: dict[str, Any]) -> str:
    """The page's content in the same order: problems first, then what runs and waits."""
    lines = [f"PlantBridge {s['site']}: up {age_words(s['uptime_seconds'])}, "
             f"{s['reload'].get('summary', '')}".rstrip(", ")]
    problems = s["problems"]
    if problems:
        lines.append(f"{len(problems)} problem(s):")
        delays = s.get("delays", [])
        lines += [f"  ~ {p} (delayed, not lost)" if p in delays else f"  ! {p}"
                  for p in problems]
    else:
        lines.append("all good")
    lines.append("sources:")
    lines += [f"  {x['name']} ({x['type']}): {x['state']}"
              + (f": {x['detail']}" if x["detail"] and x["state"] != "connected" else "")
              + f", {x['samples']} samples" for x in s["sources"]] or ["  none configured"]
    lines.append("upstreams:")
    for u in s["upstreams"]:
        probe = u.get("probe")
        said = ("not probed yet" if not probe else "probe ok" if probe["ok"]
                else f"probe failed: {probe['reason']}")
        line = (f"  {u['name']}: {said}; {u.get('pending', 0)} pending (oldest "
                f"{age_words(u.get('oldest_pending_age_seconds'))}), {u.get('dead', 0)} dead, "
                f"{u['accepted']} accepted")
        lines.append(line + (f"; last error: {u['last_error']}" if u["last_error"] else ""))
    if not s["upstreams"]:
        lines.append("  none configured")
    lines += status_lines(s.get("identity"))  # when checked upstream, and what was not
    lines.append("open conditions:")
    for e in s["open_episodes"]:
        value = "" if e.get("value") is None else f" value {e['value']:g}"
        lines.append(f"  {e['asset']} {e['rule_id']} (severity {e.get('severity', '?')}) since "
                     f"{e['raised_at']}{value}: {e.get('reason') or '-'}; upstream id: "
                     f"{request_ids(e)}")
    if not s["open_episodes"]:
        lines.append("  none")
    dead = s.get("dead_letters", [])
    if dead:
        lines.append("dead letters (fix the cause, then: plantbridge dead-letters --requeue ID):")
        lines += [f"  #{d['id']} {d['sink']} {d['asset']} {d['kind']} at {d['failed_at']}: "
                  f"{d['reason']}" for d in dead]
    return "\n".join(lines)


def show(cfg: PlantBridgeConfig, *, as_json: bool) -> int:
    code, got = fetch(cfg)
    if isinstance(got, str):
        print(got, file=sys.stderr)
        return code
    if as_json:
        print(orjson.dumps(got, option=orjson.OPT_INDENT_2).decode())
    else:
        print(format_text(got))
    return 1 if got.get("problems") else 0
