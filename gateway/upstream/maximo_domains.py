"""`check --online` for Maximo: are the rules' priorities and failure codes in Maximo's domains?

* Priority: a canonical priority reaches Maximo as `reportedpriority = priority_map[p]`. The
  values a site allows are a numeric domain, read from `mxapinumericdomain` (members `domainid`,
  `value`, `description`: IBM's SR app test data [S*]). The domain of REPORTEDPRIORITY is
  `TICKETPRIORITY` in IBM's demo data [S*]; that a site did not attach another one is not
  verified [U], so it is configuration (`domains.priority_domain`). Domains are site
  configuration, e.g. only 1, 3, 5 (UPSTREAM-APIS §2 [T]).
* Failure code: what WORKORDER.FAILURECODE holds is a failure class, a top-level row (no
  `parent`) of the failure hierarchy, read from `mxapifailurelist` (members `failurelist`,
  `orgid`, `failurecode`, the latter plain or as a related object `{failurecode, description}`:
  IBM's technician app test data [S*]). That `parent` is selectable there is assumed [U]; a
  code found only below a class (a problem, cause or remedy) is named as such. Failure codes
  are per organization: the sink's `orgid` narrows the query when set.

An object structure Maximo does not have, or an unreachable Maximo, raises UpstreamCheckError
(the check cannot answer) rather than taking the domain for empty.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from gateway.upstream.maximo_wire import maximo_error, members, where_literal
from gateway.upstream.rest import UpstreamCheckError, transport_reason

if TYPE_CHECKING:
    from gateway.upstream.maximo import MaximoSink


async def _members(sink: MaximoSink, structure: str, where: str, select: str
                   ) -> list[dict[str, Any]]:
    got = await sink.query(structure, {"oslc.where": where, "oslc.select": select})
    if isinstance(got, BaseException):
        raise UpstreamCheckError(f"{sink.name}: {transport_reason(got)}") from got
    found = members(got.body) if 200 <= got.status < 300 else None
    if found is None:
        raise UpstreamCheckError(
            f"{sink.name}: {structure} answered HTTP {got.status} "
            f"{maximo_error(got.body, got.content_type)}".rstrip()
            + " (set [upstreams.domains] to the object structures this Maximo offers)")
    return found


def _number(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _code(member: Mapping[str, Any]) -> str:
    raw = member.get("failurecode")
    if isinstance(raw, Mapping):  # the related FAILURECODE object
        raw = raw.get("failurecode")
    return str(raw or "")


async def maximo_domain_problems(sink: MaximoSink, *, priorities: Collection[int],
                                 failure_codes: Collection[str]) -> list[str]:
    """Plain-words problems ([] when Maximo knows every one)."""
    cfg = sink.config
    dom = cfg.domains
    problems: list[str] = []
    if priorities:
        rows = await _members(sink, dom.numeric_domain_structure,
                              f"domainid={where_literal(dom.priority_domain, 'domain')}",
                              "domainid,value,description")
        known = {n for n in (_number(r.get("value")) for r in rows) if n is not None}
        if not known:
            raise UpstreamCheckError(
                f"{cfg.name}: Maximo has no values in numeric domain {dom.priority_domain!r} "
                "(set domains.priority_domain to the domain of REPORTEDPRIORITY at your site)")
        for p in sorted(set(priorities)):
            value = cfg.priority_map.get(p)
            if value is None:
                problems.append(f"priority {p} has no reportedpriority in priority_map of "
                                f"upstream '{cfg.name}'")
            elif value not in known:
                problems.append(
                    f"priority {p} is sent as reportedpriority {value}, which is not in "
                    f"Maximo's domain {dom.priority_domain} (it has: "
                    f"{', '.join(str(k) for k in sorted(known))})")
    codes = sorted({c for c in failure_codes if c})
    if codes:
        listed = ",".join(where_literal(c, "failure code") for c in codes)
        where = f"failurecode in [{listed}]"
        if cfg.orgid:
            where += f" and orgid={where_literal(cfg.orgid, 'orgid')}"
        rows = await _members(sink, dom.failure_list_structure, where,
                              "failurelist,failurecode,parent,orgid")
        classes = {_code(r) for r in rows if r.get("parent") in (None, "", 0)}
        below = {_code(r) for r in rows} - classes
        org = f" of organization {cfg.orgid}" if cfg.orgid else ""
        for code in codes:
            if code in classes:
                continue
            if code in below:
                problems.append(
                    f"failure code {code!r} is a problem, cause or remedy in Maximo's failure "
                    f"hierarchy{org}, not a failure class: a work order's FAILURECODE takes a "
                    "failure class")
            else:
                problems.append(f"failure code {code!r} is not in Maximo's failure codes{org}")
    return problems
