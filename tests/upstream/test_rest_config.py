"""RestSinkConfig: the example loads and builds; mistakes are refused with a plain message."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.model import Sink
from gateway.upstream.rest import ApiKeyAuth, BearerAuth, NoAuth, RestSink, RestSinkConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "upstream-rest.toml"


def minimal(**over: Any) -> dict[str, Any]:
    return {"type": "rest", "name": "cmms", "base_url": "http://127.0.0.1:8480"} | over


async def test_example_loads_and_builds(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    [item] = raw["upstreams"]
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    item["auth"]["token"] = {"file": str(token)}  # the example's path does not exist here
    cfg = RestSinkConfig.model_validate(item)
    assert isinstance(cfg.auth, BearerAuth) and cfg.tls.verify
    sink: Sink = cfg.build()  # RestSink satisfies the shared Sink protocol (checked by mypy)
    try:
        assert isinstance(sink, RestSink) and sink.name == "cmms"
    finally:
        await sink.aclose()


def test_example_fits_the_root_config() -> None:
    from gateway import config

    raw = tomllib.loads(EXAMPLE.read_text())
    cfg = config.PlantBridgeConfig.model_validate({"upstreams": raw["upstreams"]})
    assert [u.name for u in cfg.upstreams] == ["cmms"]


def test_defaults_and_auth_kinds() -> None:
    cfg = RestSinkConfig.model_validate(minimal())
    assert isinstance(cfg.auth, NoAuth)
    assert cfg.request_path == "/api/v1/maintenance-requests"
    assert "{upstream_ref}" in cfg.status_path
    key = RestSinkConfig.model_validate(minimal(auth={"kind": "api_key",
                                                      "key": {"env": "CMMS_KEY"}}))
    assert isinstance(key.auth, ApiKeyAuth) and key.auth.header == "X-API-Key"


@pytest.mark.parametrize(("over", "words"), [
    ({"base_url": "cmms.example"}, "base_url"),
    ({"status_path": "/api/v1/updates"}, "{upstream_ref}"),
    ({"request_path": "api/v1/x"}, "start with '/'"),
    ({"connect_timeout_seconds": 40.0}, "larger than total_timeout_seconds"),
    ({"timeout": 3}, "Extra inputs"),
    ({"auth": {"kind": "basic"}}, "kind"),
    ({"auth": {"kind": "bearer"}}, "token"),
    ({"concurrent_requests": 0}, "concurrent_requests"),
])
def test_mistakes_are_refused(over: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as err:
        RestSinkConfig.model_validate(minimal(**over))
    assert words in str(err.value)


def test_missing_secret_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PB_TEST_NO_SUCH_TOKEN", raising=False)
    cfg = RestSinkConfig.model_validate(minimal(auth={
        "kind": "bearer", "token": {"env": "PB_TEST_NO_SUCH_TOKEN"}}))
    with pytest.raises(ValueError, match="PB_TEST_NO_SUCH_TOKEN"):
        cfg.build()
