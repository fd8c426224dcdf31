"""MaximoSinkConfig: the example loads, mistakes are named, secrets resolve at build."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.upstream.maximo import MaximoSink, MaximoSinkConfig

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "examples" / "upstream-maximo.toml"


def minimal(**over: Any) -> dict[str, Any]:
    return {"type": "maximo", "name": "mx", "base_url": "https://maximo.example",
            "auth": {"kind": "api_key", "key": {"value": "k"}}, "siteid": "BEDFORD"} | over


def test_the_example_loads_and_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANTBRIDGE_MAXIMO_API_KEY", "s3cret")
    [raw] = tomllib.loads(EXAMPLE.read_text())["upstreams"]
    cfg = MaximoSinkConfig.model_validate(raw)
    assert cfg.asset_map["pump-1"].location == "LINE1"
    assert cfg.priority_map == {1: 1, 2: 2, 3: 3, 4: 4}
    sink = cfg.build()
    assert isinstance(sink, MaximoSink) and sink.name == "maximo"


def test_a_missing_key_stops_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANTBRIDGE_MAXIMO_API_KEY", raising=False)
    cfg = MaximoSinkConfig.model_validate(minimal(
        auth={"kind": "api_key", "key": {"env": "PLANTBRIDGE_MAXIMO_API_KEY"}}))
    with pytest.raises(ValueError, match="PLANTBRIDGE_MAXIMO_API_KEY is not set"):
        cfg.build()


def test_defaults_are_mas_manage() -> None:
    cfg = MaximoSinkConfig.model_validate(minimal())
    assert (cfg.api_root, cfg.object_structure, cfg.on_clear) == ("/maximo/api", "mxapisr",
                                                                  "resolve")
    assert cfg.unknown_asset == "reject" and cfg.external_system == "PLANTBRIDGE"


@pytest.mark.parametrize("over,says", [
    ({"priority_map": {1: 1, 2: 2, 3: 3}}, "no entry for canonical priority [4]"),
    ({"base_url": "https://maximo.example/maximo"}, "base_url"),
    ({"api_root": "/maximo/api/"}, "api_root"),
    ({"siteid": 'BED"FORD'}, "siteid"),
    ({"asset_map": {"pump-1": {"siteid": "X"}}}, "assetnum"),
    ({"on_clear": "close"}, "on_clear"),
    ({"unknown_asset": "ignore"}, "unknown_asset"),
    ({"timeout_seconds": 3}, "timeout_seconds"),
    ({"auth": {"kind": "bearer", "token": {"value": "t"}}}, "auth"),
    ({"connect_timeout_seconds": 9, "total_timeout_seconds": 3}, "connect_timeout_seconds"),
])
def test_mistakes_are_named(over: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as err:
        MaximoSinkConfig.model_validate(minimal(**over))
    assert says in str(err.value)


def test_the_commented_parts_example_loads() -> None:
    """The example's `# [upstreams.parts]` block, uncommented, is a valid parts config."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [upstreams.parts]")
    block: list[str] = []
    for line in lines[start:]:
        if not line.startswith("# ") or (block and "=" not in line):
            break
        block.append(line.removeprefix("# "))
    parts = tomllib.loads("\n".join(block))["upstreams"]["parts"]
    cfg = MaximoSinkConfig.model_validate(minimal(parts=parts))
    assert cfg.parts.storerooms == {"0001": "CENTRAL"}
    assert cfg.parts.requisition_structure == "mxapipr" and len(block) == 7
    assert cfg.wo_object_structure == "mxapiwodetail" and "INPRG" in cfg.open_wo_statuses
    with pytest.raises(ValidationError, match="storerooms"):
        MaximoSinkConfig.model_validate(minimal(parts={"storerooms": {"0001": 'CEN"TRAL'}}))
