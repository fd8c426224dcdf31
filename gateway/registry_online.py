"""Identity validated against the EAM: does each mapped asset exist upstream, as configured?

`validate_identities` asks every SAP PM and Maximo upstream about every asset its (registry-
merged) asset_map names: Maximo through the `mxapiasset` object structure by assetnum + siteid,
SAP through API_EQUIPMENT (`$filter=Equipment eq '...'`: the key is composite) or
API_FUNCTIONALLOCATION (read by key), as UPSTREAM-WORKFLOW-APIS §1 names them. Unknown or
unusable identities come back per asset in plain words ("pump-1: Maximo has no asset P-100 at
site BEDFORD").

Priority and failure-code domains: every upstream whose sink has `domain_problems(*,
priorities, failure_codes) -> list[str]` (SAP PM: gateway/upstream/sap_domains.py; Maximo: its
own) is asked about the canonical priorities and failure codes the rules use; its answers are
listed per upstream ("upstream 'sap': priority 4 is sent as MaintPriority 4, which SAP does not
define ..."), and cached like the identities (reused while the rules ask the same).

Results are kept in `identity-cache.json` beside the outbox. An upstream that cannot be asked
now (no network at start) gets its last findings from there, for the assets whose identity has
not changed since, so a start without network never blocks monitoring.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gateway.identity_report import (
    CACHE_NAME,
    IdentityFinding,
    IdentityReport,
    cache_path_for,
    rule_domains,
)
from gateway.registry import Registry, with_registry
from gateway.upstream.maximo import MaximoSink, MaximoSinkConfig
from gateway.upstream.maximo_wire import maximo_error, members
from gateway.upstream.oauth2 import OAuth2Refused, OAuth2Unavailable
from gateway.upstream.rest import UpstreamCheckError, transport_reason
from gateway.upstream.sap_odata import error_text, odata_string, results_of
from gateway.upstream.sap_pm import SapPmSink, SapPmSinkConfig, oauth2_refused
from gateway.upstream.sap_pm_config import SapAssetRef, TechnicalObjectType

if TYPE_CHECKING:
    from gateway.config import PlantBridgeConfig
    from rules import RuleSet

__all__ = ["CACHE_NAME", "IdentityFinding", "IdentityReport", "cache_path_for", "rule_domains",
           "validate_identities"]

EQUIPMENT_SERVICE = "/sap/opu/odata/sap/API_EQUIPMENT"
FLOC_SERVICE = "/sap/opu/odata/sap/API_FUNCTIONALLOCATION"
RETIRED_STATUSES = frozenset({"DECOMMISSIONED", "NOT READY"})  # [U] standard Maximo values
_TRANSPORT = (aiohttp.ClientError, OSError, TimeoutError, OAuth2Unavailable)


def _equipment_external(number: str) -> str:
    """SAP keeps numeric equipment numbers zero-padded to 18 internally; compare unpadded."""
    return number.lstrip("0") or "0" if number.isdigit() else number


async def _sap_lookup(sink: SapPmSink, asset: str, ref: SapAssetRef) -> str | None:
    """None when SAP knows the technical object and it is not marked for deletion."""
    if ref.object_type is TechnicalObjectType.EQUIPMENT:
        number = _equipment_external(ref.technical_object)
        answer = await sink.service_client(EQUIPMENT_SERVICE).read("Equipment", {
            "$filter": f"Equipment eq {odata_string(number)}",
            "$select": "Equipment,EquipmentName,EquipmentIsMarkedForDeletion",
            "$format": "json"})
        if not answer.ok:
            raise UpstreamCheckError(f"{sink.name}: API_EQUIPMENT answered HTTP "
                                     f"{answer.status} {error_text(answer)}")
        found = [r for r in results_of(answer.body) or []
                 if _equipment_external(str(r.get("Equipment", ""))) == number]
        if not found:
            return f"SAP has no equipment {number}"
        if any(r.get("EquipmentIsMarkedForDeletion") for r in found):
            return f"SAP equipment {number} is marked for deletion"
        return None
    floc = ref.technical_object
    answer = await sink.service_client(FLOC_SERVICE).read(
        f"FunctionalLocation({odata_string(floc)})", {"$format": "json"})
    if answer.status == 404 and "json" in answer.content_type:
        return f"SAP has no functional location {floc}"
    if not answer.ok:
        raise UpstreamCheckError(f"{sink.name}: API_FUNCTIONALLOCATION answered HTTP "
                                 f"{answer.status} {error_text(answer)}")
    entity = orjson.loads(answer.body).get("d") or {}
    if entity.get("FuncnlLocIsMarkedForDeletion") or entity.get("FuncnlLocIsDeleted"):
        return f"SAP functional location {floc} is marked for deletion"
    return None


async def _maximo_lookup(sink: MaximoSink, assetnum: str, siteid: str,
                         location: str | None) -> str | None:
    got = await sink.query("mxapiasset", {
        "oslc.where": f'assetnum="{assetnum}" and siteid="{siteid}"',
        "oslc.select": "assetnum,siteid,location,status"})
    if isinstance(got, BaseException):
        raise UpstreamCheckError(f"{sink.name}: {transport_reason(got)}") from got
    if not 200 <= got.status < 300:
        raise UpstreamCheckError(f"{sink.name}: mxapiasset answered HTTP {got.status} "
                                 f"{maximo_error(got.body, got.content_type)}")
    found = members(got.body) or []
    if not found:
        return f"Maximo has no asset {assetnum} at site {siteid}"
    status = str(found[0].get("status") or "")
    if status.upper() in RETIRED_STATUSES:
        return f"Maximo asset {assetnum} at site {siteid} is {status}"
    have = found[0].get("location")
    if location is not None and have != location:
        return (f"Maximo asset {assetnum} at site {siteid} is at location {have or '(none)'}, "
                f"not {location} as configured")
    return None


async def _ask(upstream: SapPmSinkConfig | MaximoSinkConfig) -> list[IdentityFinding]:
    """Every mapped asset of one upstream, looked up there, as many at a time as the upstream's
    `concurrent_requests` (raises the first reason it cannot be asked)."""
    names = _identities(upstream)
    sink: SapPmSink | MaximoSink = upstream.build()
    gate = asyncio.Semaphore(upstream.concurrent_requests)

    async def one(asset: str) -> IdentityFinding:
        async with gate:
            if isinstance(sink, SapPmSink) and isinstance(upstream, SapPmSinkConfig):
                said = await _sap_lookup(sink, asset, upstream.asset_map[asset])
            elif isinstance(sink, MaximoSink) and isinstance(upstream, MaximoSinkConfig):
                ref = upstream.asset_map[asset]
                said = await _maximo_lookup(sink, ref.assetnum, ref.siteid or upstream.siteid,
                                            ref.location)
            else:  # pragma: no cover - build() returns the sink of its own config
                raise TypeError(f"unexpected sink {sink!r}")
        return IdentityFinding(asset, upstream.name, names[asset], said)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(a)) for a in sorted(upstream.asset_map)]
    except BaseExceptionGroup as failed:  # one reason is enough: the upstream is not usable
        raise failed.exceptions[0] from None
    finally:
        await sink.aclose()
    return [t.result() for t in tasks]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    ups = doc.get("upstreams") if isinstance(doc, dict) else None
    return ups if isinstance(ups, dict) else {}


def _write_cache(path: Path, upstreams: dict[str, Any]) -> None:
    """Atomically: a crash mid-write leaves the previous cache, never half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps({"version": 1, "upstreams": upstreams},
                                 option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)


def _cached(entry: Any, name: str, current: Mapping[str, str]) -> list[IdentityFinding]:
    """The cached findings whose identity is still the configured one."""
    assets = entry.get("assets") if isinstance(entry, dict) else None
    out = []
    for asset, seen in (assets or {}).items():
        if isinstance(seen, dict) and current.get(asset) == seen.get("identity"):
            out.append(IdentityFinding(asset, name, str(seen["identity"]), seen.get("problem")))
    return out


def _identities(upstream: SapPmSinkConfig | MaximoSinkConfig) -> dict[str, str]:
    if isinstance(upstream, SapPmSinkConfig):
        return {a: ("equipment " if r.object_type is TechnicalObjectType.EQUIPMENT
                    else "functional location ") + r.technical_object
                for a, r in upstream.asset_map.items()}
    return {a: f"{r.assetnum}@{r.siteid or upstream.siteid}/{r.location or ''}"
            for a, r in upstream.asset_map.items()}


async def _ask_within(upstream: SapPmSinkConfig | MaximoSinkConfig,
                      timeout_seconds: float) -> list[IdentityFinding] | str:
    """The upstream's findings, or in plain words why it could not be asked."""
    try:
        async with asyncio.timeout(timeout_seconds):
            return await _ask(upstream)
    except UpstreamCheckError as exc:
        return str(exc).removeprefix(f"{upstream.name}: ")
    except OAuth2Refused as exc:
        return oauth2_refused(exc)
    except TimeoutError:
        return f"no answer within {timeout_seconds:g} s"
    except _TRANSPORT as exc:
        return transport_reason(exc)
    except ValueError as exc:  # a secret that cannot be read
        return str(exc)


async def validate_identities(cfg: PlantBridgeConfig, registry: Registry, *, timeout_seconds: float,
                              cache_path: Path | None = None,
                              rules: RuleSet | None = None) -> IdentityReport:
    """Look every mapped asset up in its upstream, all upstreams at once, and (with `rules`)
    the rules' priorities and failure codes in every upstream that can answer. An upstream
    that cannot be asked within `timeout_seconds` is reported as unreachable and its cached
    findings (if any) stand in. The cache beside the outbox is updated with what was asked."""
    path = cache_path or cache_path_for(cfg.outbox_path())
    cache = _read_cache(path)
    findings: list[IdentityFinding] = []
    unreachable: dict[str, str] = {}
    from_cache: list[str] = []
    now = time.time()
    asked = [with_registry(u, registry) for u in cfg.upstreams
             if isinstance(u, SapPmSinkConfig | MaximoSinkConfig)]  # REST takes canonical ids
    asked = [u for u in asked if u.asset_map]
    wanted = rule_domains(rules) if rules is not None else None
    outcomes, domain_outcomes = await asyncio.gather(
        asyncio.gather(*(_ask_within(u, timeout_seconds) for u in asked)),
        _domains_of_all(cfg, wanted, timeout_seconds))
    for upstream, outcome in zip(asked, outcomes, strict=True):
        if not isinstance(outcome, str):
            findings += outcome
            cache[upstream.name] = {**cache.get(upstream.name, {}), "checked_at": now,
                                    "assets": {f.asset: {"identity": f.identity,
                                                         "problem": f.problem}
                                               for f in outcome}}
            continue
        unreachable[upstream.name] = outcome
        old = _cached(cache.get(upstream.name), upstream.name, _identities(upstream))
        if old:
            findings += old
            from_cache.append(upstream.name)
    domains: dict[str, tuple[str, ...]] = {}
    for name, said in domain_outcomes.items():
        assert wanted is not None
        asked_for = {"priorities": sorted(wanted[0]), "failure_codes": sorted(wanted[1])}
        entry = cache.setdefault(name, {})
        if not isinstance(said, str):
            domains[name] = tuple(said)
            entry["domains"] = asked_for | {"problems": list(said)}
            continue
        unreachable.setdefault(name, said)
        seen = entry.get("domains") if isinstance(entry, dict) else None
        if isinstance(seen, dict) and all(seen.get(k) == v for k, v in asked_for.items()):
            domains[name] = tuple(str(p) for p in seen.get("problems") or ())
            if name not in from_cache:
                from_cache.append(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_cache(path, cache)
    except OSError:
        pass  # a read-only state dir costs the cache, never the check
    return IdentityReport(now, tuple(findings), unreachable, tuple(from_cache), domains)


async def _domains_of_all(cfg: PlantBridgeConfig, wanted: tuple[set[int], set[str]] | None,
                          timeout_seconds: float) -> dict[str, list[str] | str]:
    """upstream -> its domain problems, or why it could not be asked; only upstreams whose
    sink can answer (`domain_problems`)."""
    if wanted is None:
        return {}
    names = [u.name for u in cfg.upstreams]
    said = await asyncio.gather(*(_domains_of(u, wanted, timeout_seconds)
                                  for u in cfg.upstreams))
    return {n: s for n, s in zip(names, said, strict=True) if s is not None}


async def _domains_of(upstream: Any, wanted: tuple[set[int], set[str]],
                      timeout_seconds: float) -> list[str] | str | None:
    try:
        sink = upstream.build()
    except ValueError as exc:  # a secret that cannot be read: the identity part says so too
        return str(exc)
    try:
        ask = getattr(sink, "domain_problems", None)
        if not callable(ask):
            return None
        async with asyncio.timeout(timeout_seconds):
            return list(await ask(priorities=wanted[0], failure_codes=wanted[1]))
    except UpstreamCheckError as exc:
        return str(exc).removeprefix(f"{upstream.name}: ")
    except OAuth2Refused as exc:
        return oauth2_refused(exc)
    except TimeoutError:
        return f"no answer within {timeout_seconds:g} s"
    except _TRANSPORT as exc:
        return transport_reason(exc)
    finally:
        await sink.aclose()
