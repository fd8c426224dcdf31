"""The asset registry: one technician-editable TOML file that says what each asset is upstream.

Keyed by the canonical asset id (the one the rules and the drivers use), each entry gives the
asset's identity in every EAM that takes requests for it (Maximo `assetnum`/`siteid`/`location`;
SAP equipment or functional location with planning plant, planner group and work center), the
`line` and `area` it belongs to, and the spare parts each failure code needs:

    [assets.pump-1]
    line = "line-2"
    area = "utilities"
    maximo = { assetnum = "P-100", siteid = "BEDFORD", location = "BR430" }
    sap = { equipment = "210100094", planning_plant = "1010", planner_group = "IH1" }

    [[assets.pump-1.spare_parts.BEARING]]
    material = "BRG-6205"
    quantity = 2
    unit = "EA"
    plant = "1010"
    storage_location = "0001"

Precedence (decided here, documented in docs/ by the integrator): an upstream's own
`asset_map` keeps working, and the two merge per asset; where both name the same asset, the
registry wins, and `check` says so when they disagree (see `map_conflicts`). Loading is
all-or-nothing, like the rule files: any problem fails the whole file, each problem with its line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast, overload

from pydantic import Field, ValidationError, model_validator

from gateway.settings import StrictModel
from gateway.tomllines import TomlLines
from rules.loader import plain_words

if TYPE_CHECKING:  # imported where used: an idle daemon without these upstreams needs neither
    from gateway.upstream.maximo_config import MaximoAssetRef, MaximoSinkConfig
    from gateway.upstream.sap_pm_config import SapAssetRef, SapPmSinkConfig

AssetId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
# Maximo values go into oslc.where between double quotes: no quote inside.
MaximoValue = Annotated[str, Field(min_length=1, max_length=30, pattern=r'^[^"]+$')]
UpstreamKind = Literal["maximo", "sap_pm"]
U = TypeVar("U")


class MaximoIdentity(StrictModel):
    """An asset in Maximo: its keys are assetnum + siteid (mxapiasset pk [S*])."""

    assetnum: MaximoValue
    siteid: MaximoValue | None = None  # None: the upstream's own siteid
    location: MaximoValue | None = None


class SapIdentity(StrictModel):
    """A technical object in SAP PM: an equipment (external form, e.g. "210100094") or a
    functional location, and where requests for it are planned and worked."""

    equipment: str | None = Field(default=None, min_length=1, max_length=18)
    functional_location: str | None = Field(default=None, min_length=1, max_length=40)
    planning_plant: str = Field(default="", max_length=4)
    planner_group: str = Field(default="", max_length=3)
    work_center: str = Field(default="", max_length=8)
    work_center_plant: str = Field(default="", max_length=4)  # "" = planning_plant

    @model_validator(mode="after")
    def _one_object(self) -> SapIdentity:
        if (self.equipment is None) == (self.functional_location is None):
            raise ValueError("give exactly one of equipment or functional_location")
        return self

    @property
    def technical_object(self) -> str:
        return self.equipment if self.equipment is not None else str(self.functional_location)

    @property
    def is_equipment(self) -> bool:
        return self.equipment is not None


class SparePart(StrictModel):
    """One material that a failure code needs, and where it is taken from."""

    material: str = Field(min_length=1, max_length=40)
    quantity: float = Field(gt=0)
    unit: str = Field(min_length=1, max_length=3)
    plant: str = Field(min_length=1, max_length=4)
    storage_location: str = Field(min_length=1, max_length=4)
    # below this available stock a purchase requisition is created (gateway/workflow.py)
    reorder_level: float | None = Field(default=None, ge=0)


class AssetEntry(StrictModel):
    """What one canonical asset is upstream, where it belongs, and what parts it needs."""

    description: str = ""
    line: str | None = Field(default=None, min_length=1)
    area: str | None = Field(default=None, min_length=1)
    maximo: MaximoIdentity | None = None
    sap: SapIdentity | None = None
    spare_parts: dict[str, list[SparePart]] = Field(default_factory=dict)  # by failure code


class RegistryFile(StrictModel):
    assets: dict[AssetId, AssetEntry] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegistryProblem:
    file: str
    line: int | None
    asset: str | None
    field: str
    message: str

    def __str__(self) -> str:
        parts = [self.file if self.line is None else f"{self.file}:{self.line}"]
        if self.asset:
            parts.append(f"asset '{self.asset}'")
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)


class RegistryFileError(Exception):
    """The registry file is invalid; `problems` says where and why, one line each."""

    def __init__(self, problems: Sequence[RegistryProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


_FIELDS = {*AssetEntry.model_fields, *MaximoIdentity.model_fields, *SapIdentity.model_fields,
           *SparePart.model_fields, "assets"}


class Registry:
    """The loaded registry: look-ups by canonical asset id. Empty when no file is configured."""

    def __init__(self, entries: Mapping[str, AssetEntry], file: str = "") -> None:
        self._entries = dict(entries)
        self.file = file

    @classmethod
    def empty(cls) -> Registry:
        return cls({})

    def __contains__(self, asset: object) -> bool:
        return asset in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def entry(self, asset: str) -> AssetEntry | None:
        return self._entries.get(asset)

    def line_of(self, asset: str) -> str | None:
        """The production line the asset belongs to, None when the registry does not say."""
        entry = self._entries.get(asset)
        return entry.line if entry is not None else None

    def area_of(self, asset: str) -> str | None:
        entry = self._entries.get(asset)
        return entry.area if entry is not None else None

    @overload
    def identity(self, asset: str, upstream_kind: Literal["maximo"]) -> MaximoIdentity | None:
        ...

    @overload
    def identity(self, asset: str, upstream_kind: Literal["sap_pm"]) -> SapIdentity | None:
        ...

    def identity(self, asset: str, upstream_kind: UpstreamKind
                 ) -> MaximoIdentity | SapIdentity | None:
        """The asset's identity in that kind of upstream ("maximo" or "sap_pm"), if given."""
        entry = self._entries.get(asset)
        if entry is None:
            return None
        return entry.maximo if upstream_kind == "maximo" else entry.sap

    def spare_parts(self, asset: str, failure_code: str) -> tuple[SparePart, ...]:
        entry = self._entries.get(asset)
        return tuple(entry.spare_parts.get(failure_code, ())) if entry is not None else ()

    def sap_refs(self) -> dict[str, SapAssetRef]:
        """Every SAP identity, in the form the SAP sink's `asset_map` takes."""
        return {a: sap_ref(e.sap) for a, e in self._entries.items() if e.sap is not None}

    def maximo_refs(self) -> dict[str, MaximoAssetRef]:
        from gateway.upstream.maximo_config import MaximoAssetRef

        return {a: MaximoAssetRef(assetnum=e.maximo.assetnum, siteid=e.maximo.siteid,
                                  location=e.maximo.location)
                for a, e in self._entries.items() if e.maximo is not None}


def sap_ref(ident: SapIdentity) -> SapAssetRef:
    from gateway.upstream.sap_pm_config import SapAssetRef, TechnicalObjectType

    kind = (TechnicalObjectType.EQUIPMENT if ident.is_equipment
            else TechnicalObjectType.FUNCTIONAL_LOCATION)
    return SapAssetRef(technical_object=ident.technical_object, object_type=kind,
                       planning_plant=ident.planning_plant, planner_group=ident.planner_group,
                       work_center=ident.work_center, work_center_plant=ident.work_center_plant)


def sap_config(upstream: object) -> SapPmSinkConfig | None:
    """`upstream` when it is an SAP PM upstream's config. Its module is imported only then: an
    idle daemon without SAP or Maximo upstreams loads neither."""
    if getattr(upstream, "type", None) != "sap_pm":
        return None
    from gateway.upstream.sap_pm_config import SapPmSinkConfig

    return upstream if isinstance(upstream, SapPmSinkConfig) else None


def maximo_config(upstream: object) -> MaximoSinkConfig | None:
    """`upstream` when it is a Maximo upstream's config (see `sap_config`)."""
    if getattr(upstream, "type", None) != "maximo":
        return None
    from gateway.upstream.maximo_config import MaximoSinkConfig

    return upstream if isinstance(upstream, MaximoSinkConfig) else None


def with_registry(upstream: U, registry: Registry) -> U:
    """The upstream's config with the registry merged into its `asset_map`: both are used,
    and where both name an asset the registry's identity wins (`map_conflicts` reports it)."""
    if (sap := sap_config(upstream)) is not None:
        merged_sap = {**sap.asset_map, **registry.sap_refs()}
        return cast(U, sap.model_copy(update={"asset_map": merged_sap}))
    if (mx := maximo_config(upstream)) is not None:
        merged_mx = {**mx.asset_map, **registry.maximo_refs()}
        return cast(U, mx.model_copy(update={"asset_map": merged_mx}))
    return upstream


def map_conflicts(upstream: object, registry: Registry) -> list[tuple[str, str]]:
    """(asset, plain words) for each asset that the upstream's own asset_map and the registry
    name differently."""
    out: list[tuple[str, str]] = []
    if (sap := sap_config(upstream)) is not None:
        ours = registry.sap_refs()
        for asset, ref in sorted(sap.asset_map.items()):
            if asset in ours and ours[asset] != ref:
                out.append((asset, f"asset_map names it {_sap_words(ref)}, the asset registry "
                                   f"{_sap_words(ours[asset])}; the registry's is used"))
    elif (mx := maximo_config(upstream)) is not None:
        site = mx.siteid
        for asset, mref in sorted(mx.asset_map.items()):
            reg = registry.identity(asset, "maximo")
            if reg is None:
                continue
            theirs = (mref.assetnum, mref.siteid or site, mref.location)
            mine = (reg.assetnum, reg.siteid or site, reg.location)
            if theirs != mine:
                out.append((asset, f"asset_map names it {_mx_words(*theirs)}, the asset registry "
                                   f"{_mx_words(*mine)}; the registry's is used"))
    return out


def _sap_words(ref: SapAssetRef) -> str:
    from gateway.upstream.sap_pm_config import TechnicalObjectType

    kind = "equipment" if ref.object_type is TechnicalObjectType.EQUIPMENT else \
        "functional location"
    routing = [f"{k} {v}" for k, v in (("planning plant", ref.planning_plant),
                                       ("planner group", ref.planner_group),
                                       ("work center", ref.work_center)) if v]
    return f"{kind} {ref.technical_object}" + (f" ({', '.join(routing)})" if routing else "")


def _mx_words(assetnum: str, siteid: str, location: str | None) -> str:
    return f"asset {assetnum} at site {siteid}" + (f", location {location}" if location else "")


def _problems(exc: ValidationError, file: str, lines: TomlLines) -> list[RegistryProblem]:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        asset = str(loc[1]) if len(loc) > 1 and loc[0] == "assets" else None
        inner = dict(err) | {"loc": loc[2:] if asset else loc}
        field, words = plain_words(inner, _FIELDS)
        if err["type"] == "string_pattern_mismatch" and len(loc) == 3 and loc[2] == "[key]":
            field, words = "", "the asset id may use only letters, digits and . _ : -"
        if err["type"] == "value_error":  # our own validators speak plain words already
            words = str(err["msg"]).removeprefix("Value error, ")
        out.append(RegistryProblem(file, lines.line(loc), asset, field, words))
    return out


def parse_registry(text: str, file: str) -> Registry:
    """A registry from TOML text, or RegistryFileError with every problem and its line."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise RegistryFileError([RegistryProblem(file, line, None, "",
                                                 f"not valid TOML: {msg.lower()}")]) from None
    try:
        parsed = RegistryFile.model_validate(raw)
    except ValidationError as exc:
        raise RegistryFileError(_problems(exc, file, TomlLines(text))) from None
    return Registry(parsed.assets, file)


def load_registry(path: Path) -> Registry:
    """Read and validate the registry file; RegistryFileError says what is wrong, where."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryFileError([RegistryProblem(str(path), None, None, "",
                                                 "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryFileError([RegistryProblem(str(path), None, None, "",
                                                 f"cannot read the file: {exc}")]) from None
    return parse_registry(text, str(path))


def registry_path(gateway_table: object, config_file: Path) -> Path | None:
    """The registry file that `[gateway] assets_file` names, relative to the config file."""
    name = gateway_table.get("assets_file") if isinstance(gateway_table, dict) else None
    if not isinstance(name, str) or not name:
        return None  # absent, or wrongly typed (reported with the main file's problems)
    return Path(name) if Path(name).is_absolute() else config_file.parent / name
