"""Every JSON endpoint and the page answer after every kind of rejection and a dead letter.

Regression: `/status` answered 500 for good once a message had been rejected, because
rejection reasons are enum keys and the JSON encoder refused them.
"""

from __future__ import annotations

import time

import aiohttp
import orjson

from gateway.http import dumps
from tests.e2e.conftest import stack  # noqa: F401 - the whole-stack fixture of the e2e suite
from tests.e2e.stack import Stack, vibration_rule
from tests.harness import wait_for

# One payload per way an MQTT JSON message can be refused, published on plant/pump-9/<signal>.
BAD_PAYLOADS: dict[str, bytes] = {
    "empty": b"   ",
    "malformed_json": b'{"value": ',
    "not_a_number": b'{"value": "high"}',
    "nan": b'{"value": "NaN"}',
    "infinite": b'{"value": "inf"}',
    "no_value": b'{"reading": 3.0}',
    "bad_timestamp": b'{"value": 3.0, "ts": "yesterday"}',
    "too_large": b'{"value": 1.0, "pad": "' + b"x" * 600 + b'"}',
}


def _source(s: Stack) -> str:
    """The e2e MQTT source with a small payload limit, so `too_large` can be provoked."""
    return s.mqtt_source().replace('reconnect_initial_seconds',
                                       'max_payload_bytes = 512\nreconnect_initial_seconds')


def test_enum_keys_are_written_as_text() -> None:
    from drivers.mqtt.codec import Reason

    assert orjson.loads(dumps({Reason.NAN: 1, 7: "x"})) == {"nan": 1, "7": "x"}


async def test_every_endpoint_answers_after_rejections_and_a_dead_letter(
        stack: Stack) -> None:
    stack.write_config(vibration_rule(), source=_source(stack))
    d = await stack.start_daemon()
    assert d.outbox is not None
    outbox = d.outbox
    for i, payload in enumerate(BAD_PAYLOADS.values()):
        stack.publish("pump-9", f"s{i}", None, raw=payload)

    def rejected() -> dict[str, int]:
        return {str(k): v for k, v in next(iter(d.sources.values()))[1].health().rejected.items()}

    await wait_for(lambda: set(BAD_PAYLOADS) <= set(rejected()), 15, "every rejection counted")

    stack.sim.faults.set("error_5xx", count=1, status=400)  # refused for good, once
    await stack.play("pump-1", [3.0] + [8.0] * 10)

    async def one_dead() -> bool:
        return (await outbox.stats(time.time())).dead.get("cmms", 0) == 1

    await wait_for(one_dead, 15, "the request dead-lettered")

    base = f"http://127.0.0.1:{d.http_port}"
    async with aiohttp.ClientSession() as http:
        for path in ("/status", "/healthz", "/readyz"):
            async with http.get(base + path) as r:
                body = await r.read()
                # /readyz is 503 while there is a problem (the dead letter), but still JSON.
                assert r.status == (503 if path == "/readyz" else 200), (path, body[:400])
                doc = orjson.loads(body)
                assert isinstance(doc, dict), path
                if path == "/status":
                    got = doc["sources"][0]["rejected"]
                    assert set(BAD_PAYLOADS) <= set(got), got
                    assert doc["outbox"]["dead"] == {"cmms": 1}
                    assert doc["reload"]["summary"].startswith("1 rule (")
                if path == "/readyz":
                    assert doc["ready"] is False and any("dead-lettered" in p
                                                         for p in doc["problems"])
        async with http.get(base + "/") as r:
            page = await r.text()
            assert r.status == 200 and "malformed_json" in page and "dead-lettered" in page
        async with http.get(base + "/metrics") as r:
            text = await r.text()
            assert r.status == 200
            assert 'plantbridge_outbox_dead{sink="cmms"} 1.0' in text
            assert 'plantbridge_outbox_pending{sink="cmms"} 0.0' in text
            assert 'reason="malformed_json"' in text
