"""Access to the HTTP endpoint off loopback: a token, over real sockets, loopback not exempt.

The daemon binds 0.0.0.0 on a free port; the test connects through 127.0.0.1, so a guard that
trusted loopback would let these requests through and fail the test.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from gateway import config as config_mod
from gateway.http import COOKIE
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import free_port

TOKEN = "page-token-5d1c"


def _with_http(path: Path, lines: str) -> None:
    """Put `lines` into the [http] table of a config written by Stack.write_config."""
    text = path.read_text()
    assert "[http]\n" in text
    path.write_text(text.replace("[http]\n", f"[http]\n{lines}\n", 1))


def test_off_loopback_without_a_token_is_refused_in_plain_words(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(vibration_rule())
    cfg = tmp_path / "plantbridge.toml"
    cfg.write_text('[http]\nlisten_host = "0.0.0.0"\n[rules]\nfiles = ["rules.toml"]\n')
    found = config_mod.examine(cfg)
    said = " ".join(str(p) for p in found.problems)
    assert "listen_host '0.0.0.0' is reachable from other machines" in said, said
    assert "token" in said
    cfg.write_text('[http]\nlisten_host = "127.0.0.1"\n[rules]\nfiles = ["rules.toml"]\n')
    assert config_mod.examine(cfg).problems == []


def test_an_unreadable_token_file_is_named_by_check(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text(vibration_rule())
    cfg = tmp_path / "plantbridge.toml"
    missing = tmp_path / "no-such-token"
    cfg.write_text(f'[http]\nlisten_host = "0.0.0.0"\ntoken = {{ file = "{missing}" }}\n'
                   '[rules]\nfiles = ["rules.toml"]\n')
    said = " ".join(str(p) for p in config_mod.examine(cfg).problems)
    assert f"http: token: cannot read secret file {missing}" in said, said


async def test_every_endpoint_but_healthz_needs_the_token(stack: Stack,
                                                          tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "http-token"
    token_file.write_text(TOKEN + "\n")
    path = stack.write_config(vibration_rule(), http_port=port)
    _with_http(path, f'listen_host = "0.0.0.0"\ntoken = {{ file = "{token_file}" }}')
    await stack.start_daemon()
    base = f"http://127.0.0.1:{port}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200
        for endpoint in ("/status", "/readyz", "/metrics", "/"):
            async with http.get(base + endpoint) as r:
                assert r.status == 401, endpoint
                assert "needs a token" in await r.text()
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(base + endpoint,
                                headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401, endpoint
            async with http.get(base + endpoint, headers=bearer) as r:
                assert r.status == 200, endpoint
        async with http.get(f"{base}/metrics", headers=bearer) as r:
            assert "plantbridge_samples_total" in await r.text()


async def test_the_page_logs_in_with_a_cookie(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    path = stack.write_config(vibration_rule(), http_port=port)
    _with_http(path, f'listen_host = "0.0.0.0"\ntoken = {{ value = "{TOKEN}" }}')
    await stack.start_daemon()
    base = f"http://127.0.0.1:{port}"
    html = {"Accept": "text/html"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/", headers=html, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
        async with http.get(f"{base}/login") as r:
            assert r.status == 200 and 'name="token"' in await r.text()
        async with http.post(f"{base}/login", data={"token": "guess"},
                             allow_redirects=False) as r:
            assert r.status == 401
            assert "not the one" in await r.text()
            assert COOKIE not in r.cookies
        async with http.post(f"{base}/login", data={"token": TOKEN},
                             allow_redirects=False) as r:
            assert r.status == 303
            set_cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert TOKEN not in set_cookie  # the cookie is derived from the token, not the token
        async with http.get(f"{base}/", headers=html) as r:
            assert r.status == 200
            assert "PlantBridge" in await r.text() and "Sources" in await r.text()
        async with http.get(f"{base}/status") as r:  # the page's JSON link works too
            assert r.status == 200
    async with aiohttp.ClientSession() as fresh, fresh.get(
            f"{base}/status", cookies={COOKIE: "forged"}) as r:
        assert r.status == 401


async def test_status_cli_sends_the_token(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    path = stack.write_config(vibration_rule(), http_port=port)
    _with_http(path, f'listen_host = "0.0.0.0"\ntoken = {{ value = "{TOKEN}" }}')
    await stack.start_daemon()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "status", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert "all good" in out.decode()
