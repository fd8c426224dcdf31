"""The Maximo simulator's assets: the `mxapiasset` object structure, read only.

Seeded here from the simulator's own site, never from an adapter's config. What the shared doc
gives (UPSTREAM-WORKFLOW-APIS §1, Maximo): `GET /os/mxapiasset` with `oslc.where` (e.g.
`assetnum="11430" and siteid="BEDFORD"`) and `oslc.select`, answers in `member[]` [S]; the
asset's key is siteid + assetnum [S*]. Asset statuses (OPERATING, NOT READY, DECOMMISSIONED) are
Maximo's standard ones as generally known [U].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from simulators.maximo import oslc

FIELDS = frozenset({"assetnum", "siteid", "orgid", "location", "description", "status",
                    "assettag", "changedate"})


def asset(assetnum: str, siteid: str, location: str, description: str,
          status: str = "OPERATING") -> dict[str, Any]:
    return {"assetnum": assetnum, "siteid": siteid, "orgid": "EAGLENA", "location": location,
            "description": description, "status": status, "assettag": "",
            "changedate": "2026-01-12T08:30:00+00:00"}


# Site BEDFORD as the simulator knows it: the demo pumps and fan, and one decommissioned pump.
SEED = (
    asset("PUMP-1", "BEDFORD", "BR430", "Cooling water pump 1"),
    asset("PUMP-2", "BEDFORD", "BR430", "Cooling water pump 2"),
    asset("FAN-1", "BEDFORD", "BR200", "Exhaust fan 1"),
    asset("PUMP-9", "BEDFORD", "BR430", "Old feed pump", status="DECOMMISSIONED"),
)


class AssetStore:
    """The assets `mxapiasset` serves."""

    def __init__(self, records: Iterable[Mapping[str, Any]] = SEED) -> None:
        self.records = [dict(r) for r in records]
        self._rowstamp = 1000

    @classmethod
    def from_sites(cls, assets: Mapping[str, str]) -> AssetStore:
        """Assets with no more than a site each (for a simulator given only assetnum->siteid)."""
        return cls(asset(num, site, "", num) for num, site in assets.items())

    def query(self, where: str, select: str | None) -> list[dict[str, Any]]:
        """The members matching an `oslc.where`, projected by `oslc.select` (raises
        oslc.QuerySyntaxError for what Maximo would refuse)."""
        conds = oslc.parse_where(where, FIELDS.__contains__) if where.strip() else []
        chosen = oslc.parse_select(select) if select else [oslc.Selected("assetnum")]
        return [oslc.project(r, chosen) | {"_rowstamp": str(self._rowstamp + i)}
                for i, r in enumerate(self.records) if all(c.matches(r) for c in conds)]
