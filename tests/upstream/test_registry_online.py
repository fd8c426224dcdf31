"""Identity validated against the EAM: `plantbridge check --online` (a real CLI process) and the
start-up probe's `validate_identities`, against the SAP and Maximo simulators over real sockets.

The simulators hold their own seeded plant (simulators/sap_pm/masterdata.py,
simulators/maximo/assets.py), not this test's registry: a look-up that finds an asset proves
the gateway asked the way the EAM answers. Assumed facts ([U]/[T] in the shared docs): the SAP
equipment API answers in the unpadded external form and compares filter values literally;
Maximo's DECOMMISSIONED asset status.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway import config as config_mod
from gateway.registry_online import CACHE_NAME, validate_identities
from simulators.maximo import MaximoSimulator
from simulators.sap_pm import SapPmSimulator

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
[assets.pump-1]
line = "line-2"
maximo = { assetnum = "PUMP-1", siteid = "BEDFORD", location = "BR430" }
sap = { equipment = "000000000210100094", planning_plant = "1010" }

[assets.fan-1]
maximo = { assetnum = "FAN-1" }
sap = { functional_location = "1010-CWS-WCS-CWCP1" }
"""

BAD = """\
[assets.pump-1]
maximo = { assetnum = "P-100", siteid = "BEDFORD" }
sap = { equipment = "999999" }

[assets.pump-2]
maximo = { assetnum = "PUMP-2", location = "BR999" }
sap = { equipment = "210100099" }

[assets.fan-1]
maximo = { assetnum = "PUMP-9" }
sap = { functional_location = "1010-NOWHERE" }
"""

RULES = "".join(f"""
[[rule]]
id = "vib-{asset}"
kind = "threshold"
asset = "{asset}"
signal = "vibration"
above = 7.1
clear_below = 6.0
""" for asset in ("pump-1", "pump-2", "fan-1"))


@pytest.fixture
async def eams() -> AsyncIterator[tuple[SapPmSimulator, MaximoSimulator]]:
    sap = SapPmSimulator(oauth_clients={"PB_CLIENT": "s3cret"}, token_lifetime_seconds=60)
    mx = MaximoSimulator()
    await sap.start()
    await mx.start()
    try:
        yield sap, mx
    finally:
        await sap.stop()
        await mx.stop()


def write(tmp: Path, registry: str, sap_url: str, mx_url: str, rules: str = RULES) -> Path:
    (tmp / "rules.d").mkdir(exist_ok=True)
    (tmp / "rules.d" / "r.toml").write_text(rules)
    (tmp / "assets.toml").write_text(registry)
    path = tmp / "plantbridge.toml"
    path.write_text(f"""
[gateway]
state_dir = "{tmp}"
assets_file = "assets.toml"

[rules]
files = ["rules.d/*.toml"]

[[sources]]
type = "mqtt"
name = "plant"
port = 1883
[[sources.subscriptions]]
pattern = "plant/+asset/+signal"

[[upstreams]]
type = "sap_pm"
name = "sap"
base_url = "{sap_url}"
sap_client = "100"
total_timeout_seconds = 5.0
connect_timeout_seconds = 2.0
asset_map = {{ pump-2 = {{ technical_object = "210100095" }} }}
[upstreams.auth]
kind = "oauth2"
client_id = {{ value = "PB_CLIENT" }}
client_secret = {{ value = "s3cret" }}

[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "{mx_url}"
siteid = "BEDFORD"
total_timeout_seconds = 5.0
connect_timeout_seconds = 2.0
auth = {{ kind = "api_key", key = {{ value = "test-key" }} }}
asset_map = {{ pump-2 = {{ assetnum = "PUMP-2" }} }}
""")
    return path


async def check_online(path: Path) -> tuple[int, str, str]:
    """`plantbridge check --online` as a separate process (the simulators serve meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "check", "--config", str(path), "--online",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_good_registry_passes_online(
        tmp_path: Path, eams: tuple[SapPmSimulator, MaximoSimulator]) -> None:
    sap, mx = eams
    code, out, err = await check_online(write(tmp_path, GOOD, sap.url, mx.url))
    assert code == 0, err
    assert "online: every mapped asset is known upstream as configured" in out
    # Really asked: SAP both services (with an OAuth2 token), Maximo its asset structure.
    assert sap.oauth is not None and sap.oauth.issued >= 1
    assert mx.count("GET", "/os/mxapiasset") == 3  # pump-1, fan-1, and pump-2 of asset_map


async def test_check_online_names_each_asset_the_eam_does_not_know(
        tmp_path: Path, eams: tuple[SapPmSimulator, MaximoSimulator]) -> None:
    sap, mx = eams
    code, _, err = await check_online(write(tmp_path, BAD, sap.url, mx.url))
    assert code == 1
    for line in (
            "pump-1: Maximo has no asset P-100 at site BEDFORD",
            "pump-1: SAP has no equipment 999999",
            "pump-2: Maximo asset PUMP-2 at site BEDFORD is at location BR430, not BR999 as "
            "configured",
            "pump-2: SAP equipment 210100099 is marked for deletion",
            "fan-1: Maximo asset PUMP-9 at site BEDFORD is DECOMMISSIONED",
            "fan-1: SAP has no functional location 1010-NOWHERE"):
        assert line in err.splitlines(), err
    assert "6 identity or domain problem(s) upstream" in err


async def test_cached_findings_stand_in_when_the_eam_is_unreachable(
        tmp_path: Path, eams: tuple[SapPmSimulator, MaximoSimulator]) -> None:
    sap, mx = eams
    loaded = config_mod.load(write(tmp_path, BAD, sap.url, mx.url))
    online = await validate_identities(loaded.config, loaded.registry, timeout_seconds=10)
    assert not online.unreachable and len(online.problems) == 6
    cache = tmp_path / CACHE_NAME
    assert cache.exists()
    assert set(orjson.loads(cache.read_bytes())["upstreams"]) == {"sap", "maximo"}

    await sap.go_down()
    await mx.go_down()
    offline = await validate_identities(loaded.config, loaded.registry, timeout_seconds=3)
    assert set(offline.unreachable) == {"sap", "maximo"}
    assert set(offline.from_cache) == {"sap", "maximo"}
    assert sorted(offline.problems) == sorted(online.problems)  # monitoring knows what it knew
    assert any("upstream 'sap' could not be asked" in line and "last known findings" in line
               for line in offline.lines())

    # An identity changed since the cache was written is not vouched for by the old finding.
    (tmp_path / "assets.toml").write_text(BAD.replace('"P-100"', '"PUMP-1"'))
    changed = config_mod.load(tmp_path / "plantbridge.toml")
    again = await validate_identities(changed.config, changed.registry, timeout_seconds=3)
    assert not any(p.startswith("pump-1: Maximo") for p in again.problems)
    assert len(again.problems) == 5


# Priorities and failure codes: pump-1's requests go out at priority 4, which this SAP's
# priority type does not define; one failure code is in the simulator's damage catalog
# (PUMP/BRG), one names a code group it has without that code, one is not in SAP's form.
DOMAIN_RULES = RULES.replace('asset = "pump-1"', 'asset = "pump-1"\npriority = 4\n'
                             'failure_code = "PUMP/BRG"').replace(
    'asset = "pump-2"', 'asset = "pump-2"\nfailure_code = "PUMP/XXXX"').replace(
    'asset = "fan-1"', 'asset = "fan-1"\nfailure_code = "BEARING"')


@pytest.fixture
async def sap_three_priorities() -> AsyncIterator[SapPmSimulator]:
    sap = SapPmSimulator(oauth_clients={"PB_CLIENT": "s3cret"}, priorities=("1", "2", "3"))
    await sap.start()
    try:
        yield sap
    finally:
        await sap.stop()


async def test_check_online_names_priorities_and_failure_codes_sap_does_not_know(
        tmp_path: Path, sap_three_priorities: SapPmSimulator,
        eams: tuple[SapPmSimulator, MaximoSimulator]) -> None:
    sap, (_, mx) = sap_three_priorities, eams
    path = write(tmp_path, GOOD, sap.url, mx.url, rules=DOMAIN_RULES)
    code, _, err = await check_online(path)
    assert code == 1, err
    said = [line for line in err.splitlines() if line.startswith("upstream 'sap': ")]
    assert said == [
        "upstream 'sap': priority 4 is sent as MaintPriority 4, which SAP does not define "
        "for priority type PM (SAP has: 1, 2, 3)",
        "upstream 'sap': failure code 'BEARING': SAP catalog C has no such code (write "
        "failure codes for SAP as CODEGROUP/CODE)",
        "upstream 'sap': failure code 'PUMP/XXXX': SAP catalog C has no code XXXX in code "
        "group PUMP",
    ], err
    # Maximo is asked too, with its own domains (tests/upstream/maximo/test_domains.py): BEARING
    # is one of its failure classes, SAP's CODEGROUP/CODE forms are not.
    said_maximo = [line for line in err.splitlines() if line.startswith("upstream 'maximo': ")]
    assert said_maximo == [
        "upstream 'maximo': failure code 'PUMP/BRG' is not in Maximo's failure codes",
        "upstream 'maximo': failure code 'PUMP/XXXX' is not in Maximo's failure codes"], err
    assert "5 identity or domain problem(s) upstream" in err  # the identities themselves are fine

    # Cached like the identities: without SAP, the last answer stands in ...
    loaded = config_mod.load(path)
    await sap.go_down()
    offline = await validate_identities(loaded.config, loaded.registry, timeout_seconds=3,
                                        rules=loaded.rules)
    assert "sap" in offline.unreachable and "sap" in offline.from_cache
    assert [p for p in offline.domain_problems if p.startswith("upstream 'sap'")] == said
    # ... while the rules ask the same: a changed rule set is not vouched for by it.
    (tmp_path / "rules.d" / "r.toml").write_text(RULES)
    changed = config_mod.load(path)
    again = await validate_identities(changed.config, changed.registry, timeout_seconds=3,
                                      rules=changed.rules)
    assert again.domain_problems == []


async def test_codes_too_long_or_missing_from_their_group_are_named(
        tmp_path: Path, eams: tuple[SapPmSimulator, MaximoSimulator]) -> None:
    sap, mx = eams
    rules = RULES.replace('asset = "pump-2"', 'asset = "pump-2"\nfailure_code = "PUMP/OIL"')
    rules = rules.replace('asset = "fan-1"', 'asset = "fan-1"\nfailure_code = "MOTORS/OVHEAT"')
    loaded = config_mod.load(write(tmp_path, GOOD, sap.url, mx.url, rules=rules))
    report = await validate_identities(loaded.config, loaded.registry, timeout_seconds=10,
                                       rules=loaded.rules)
    assert [p for p in report.domain_problems if p.startswith("upstream 'sap'")] == [
        "upstream 'sap': failure code 'MOTORS/OVHEAT': SAP code groups have at most 8 "
        "characters and codes at most 4",
        "upstream 'sap': failure code 'PUMP/OIL': SAP catalog C has no code OIL in code "
        "group PUMP"]
    assert report.problems == [] and not report.unreachable
