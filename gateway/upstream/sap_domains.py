"""`check --online` for SAP PM: are the rules' priorities and failure codes known to SAP?

A canonical priority reaches SAP as `MaintPriority = priority_map[p]`; SAP accepts it only when
it is a priority of the notification's priority type (customizing table T356). A failure code
is looked up in the catalog of `domains.catalog` (C, damage, by default): `CODEGROUP/CODE`
names one code; a bare value must be a code of some group (SAP codes are at most 4 characters,
code groups 8). Both domains are read from value-help entity sets of the notification service
(`SapDomainsConfig`); which ones a real system offers is not verified [U], so the entity sets
and property names are configuration, and an entity set SAP does not have is said in plain
words (the check cannot answer) rather than taken for an empty domain.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from gateway.upstream.rest import UpstreamCheckError
from gateway.upstream.sap_odata import error_text, odata_string, results_of

if TYPE_CHECKING:
    from gateway.upstream.sap_pm import SapPmSink
    from gateway.upstream.sap_pm_config import SapPmSinkConfig

MAX_CODE = 4
MAX_CODE_GROUP = 8


async def _rows(sink: SapPmSink, entity_set: str, flt: str, select: str) -> list[dict[str, object]]:
    answer = await sink.client.read(entity_set, {"$filter": flt, "$select": select,
                                                 "$format": "json"})
    found = results_of(answer.body) if answer.ok else None
    if found is None:
        raise UpstreamCheckError(
            f"{sink.name}: value help {entity_set} answered HTTP {answer.status} "
            f"{error_text(answer)}".rstrip()
            + " (set [upstreams.domains] to the value helps this system offers)")
    return found


async def sap_domain_problems(sink: SapPmSink, cfg: SapPmSinkConfig, *,
                              priorities: Collection[int],
                              failure_codes: Collection[str]) -> list[str]:
    """Plain-words problems ([] when SAP knows every one); raises UpstreamCheckError when SAP
    cannot be asked (unreachable, no such value help), like the identity look-ups."""
    dom = cfg.domains
    problems: list[str] = []
    if priorities:
        rows = await _rows(sink, dom.priority_entity_set,
                           f"ARTPR eq {odata_string(dom.priority_type)}", "ARTPR,PRIOK")
        known = {str(r.get("PRIOK")) for r in rows}
        for p in sorted(set(priorities)):
            sap = cfg.priority_map.get(p)
            if sap is None:
                problems.append(f"priority {p} has no SAP MaintPriority in priority_map of "
                                f"upstream '{cfg.name}'")
            elif sap not in known:
                problems.append(
                    f"priority {p} is sent as MaintPriority {sap}, which SAP does not define "
                    f"for priority type {dom.priority_type} (SAP has: "
                    f"{', '.join(sorted(known)) or 'none'})")
    codes = sorted({c for c in failure_codes if c})
    if codes:
        rows = await _rows(sink, dom.code_entity_set,
                           f"KATALOGART eq {odata_string(dom.catalog)}",
                           "KATALOGART,CODEGRUPPE,CODE")
        pairs = {(str(r.get("CODEGRUPPE")), str(r.get("CODE"))) for r in rows}
        for code in codes:
            problem = _code_problem(code, pairs, dom.catalog)
            if problem is not None:
                problems.append(problem)
    return problems


def _code_problem(code: str, pairs: set[tuple[str, str]], catalog: str) -> str | None:
    group, sep, leaf = code.partition("/")
    if sep:
        if len(group) > MAX_CODE_GROUP or len(leaf) > MAX_CODE:
            return (f"failure code {code!r}: SAP code groups have at most {MAX_CODE_GROUP} "
                    f"characters and codes at most {MAX_CODE}")
        if (group, leaf) not in pairs:
            return f"failure code {code!r}: SAP catalog {catalog} has no code {leaf} in " \
                   f"code group {group}"
        return None
    if any(c == code for _, c in pairs):
        return None
    return (f"failure code {code!r}: SAP catalog {catalog} has no such code (write failure "
            "codes for SAP as CODEGROUP/CODE)")
