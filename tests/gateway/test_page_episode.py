"""The episode page's parts without a browser: where a rule is written, and an unknown id."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.http import build_app
from gateway.page_episode import rule_location
from rules.loader import load_rule_files
from tests.harness import free_port

RULES = """# pumps
[[rule]]
id = "a"
kind = "stale"
asset = "p1"
signal = "v"
limit_seconds = 5

[[rule]]
# the second
id = "b"
kind = "stale"
asset = "p1"
signal = "v"
limit_seconds = 9
"""


def test_rule_location_from_the_loader_or_by_scanning(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RULES)
    defs = load_rule_files([path]).rules
    file, line, text = rule_location(defs, "b")
    assert (file, line) == (str(path), 9)
    assert text.startswith("[[rule]]\n# the second\nid = \"b\"") and "limit_seconds = 9" in text
    unlined = [dataclasses.replace(d, line=None) for d in defs]
    assert rule_location(unlined, "b")[1:] == (9, text)
    assert rule_location(unlined, "a")[1] == 2 and "limit_seconds = 9" not in \
        rule_location(unlined, "a")[2]
    assert rule_location(defs, "gone") == ("", None, "")


async def test_an_unknown_episode_is_a_404_that_says_so() -> None:
    async def page(ident: str) -> str | None:
        return "<p>known</p>" if ident == "r/p1/1000" else None

    async def refresh() -> None:
        return None

    app = build_app(lambda: {}, refresh, None, episode_page=page)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/episode/r%2Fp1%2F1000") as r:
                assert r.status == 200 and await r.text() == "<p>known</p>"
            async with http.get(f"http://127.0.0.1:{port}/episode/r/p1/1000") as r:
                assert r.status == 200  # slashes unescaped work too
            async with http.get(f"http://127.0.0.1:{port}/episode/x%3Cb%3E") as r:
                assert r.status == 404
                assert "No episode x&lt;b&gt; is known" in await r.text()
    finally:
        await runner.cleanup()
