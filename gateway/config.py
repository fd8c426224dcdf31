"""The root config: composes each component's own model; reports problems in plain words.

`load(path)` returns a fully validated config plus its rule set, or raises `ConfigError` with one
`Problem` per mistake (file and line, component or rule id, field, message). Nothing half-valid
is ever returned, so a bad file can never replace a good running config. `examine(path)` is the
same look without raising: every problem of the main file and of every rule file in one pass,
and the warnings (`plantbridge check` prints both).
"""

from __future__ import annotations

import enum
import glob
import ipaddress
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from buffer.config import OutboxConfig
from gateway.component_types import SOURCE_VALIDATOR, UPSTREAM_VALIDATOR
from gateway.coverage import range_coverage, rule_coverage, unsure_words
from gateway.registry import (
    Registry,
    RegistryFileError,
    RegistryProblem,
    load_registry,
    registry_path,
)
from gateway.registry import with_registry as with_registry
from gateway.registry_check import registry_findings
from gateway.rollup import AlarmsConfig
from gateway.settings import Secret, StrictModel
from gateway.tomllines import TomlLines
from gateway.upstream.forwarder import ForwardingConfig
from gateway.workflow import with_workflow
from rules import RuleFileError, RuleProblem, RuleSet, load_rule_files
from rules.loader import describe_rules as describe_rules  # the one rule-count wording
from rules.loader import plain_words

if TYPE_CHECKING:
    from drivers.modbus.config import ModbusSourceConfig
    from drivers.mqtt.config import MqttSourceConfig
    from drivers.opcua.config import OpcUaSourceConfig
    from gateway.upstream.maximo_config import MaximoSinkConfig
    from gateway.upstream.nats_config import NatsSinkConfig
    from gateway.upstream.rest_config import RestSinkConfig
    from gateway.upstream.sap_pm_config import SapPmSinkConfig
    from gateway.upstream.uns_config import UnsSinkConfig

    SourceConfig = MqttSourceConfig | OpcUaSourceConfig | ModbusSourceConfig
    UpstreamConfig = (RestSinkConfig | SapPmSinkConfig | MaximoSinkConfig | UnsSinkConfig
                      | NatsSinkConfig)
else:  # chosen by `type`; a kind's config module loads when a config names it
    SourceConfig = Annotated[Any, SOURCE_VALIDATOR]
    UpstreamConfig = Annotated[Any, UPSTREAM_VALIDATOR]


class GatewaySettings(StrictModel):
    site: str = "plant"
    state_dir: Path = Path("/var/lib/plantbridge")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # The asset registry (gateway/registry.py), relative to this file; none: each upstream's
    # own asset_map alone, as before the registry existed.
    assets_file: str | None = None


class HttpConfig(StrictModel):
    enabled: bool = True
    listen_host: str = "127.0.0.1"
    port: int = Field(default=8380, ge=0, le=65535)
    # Needed off loopback: `Authorization: Bearer <token>` or the page's login (see gateway/http.py)
    token: Secret | None = None
    # A critical (severity 1) request still undelivered after this long makes /readyz red
    critical_pending_seconds: float = Field(default=120.0, gt=0)
    # Buckets (min/max/last) per rule signal on the page's 30-minute trends: 180 = 10 s each,
    # about 3.7 KiB per signal (gateway/trends.py)
    trend_points: int = Field(default=180, ge=10, le=3600)

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HttpConfig:
        if self.enabled and self.token is None and not is_loopback(self.listen_host):
            raise ValueError(
                f"listen_host {self.listen_host!r} is reachable from other machines: set "
                'token = { file = "/etc/plantbridge/secrets/http-token" } (or credential = ...)'
                " in [http], or listen on 127.0.0.1")
        return self


def is_loopback(host: str) -> bool:
    """Only this machine can connect to `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class RulesConfig(StrictModel):
    files: list[str] = ["rules.d/*.toml"]  # globs, relative to the config file
    tick_seconds: float = Field(default=1.0, gt=0)
    # A pattern rule (`asset_pattern`) gets one instance per asset that sent its signal, up to
    # this many; further assets are refused, counted and shown on the status page.
    max_instances_per_rule: int = Field(default=1000, ge=1)
    # After a start, a stale rule gives a silent sensor this long (at most its own limit)
    # before calling it silent: while the gateway was down it could not see the data.
    stale_start_grace_seconds: float = Field(default=30.0, ge=0)
    # Rule state is stored as a journal of the samples evaluated, with a full checkpoint now
    # and then (rules/journal.py): at most this many samples between checkpoints, which is
    # also the most a start after a crash evaluates again (~3 us each: 0.3 s). 0 stores every
    # changed rule instance (and sample mark) at every commit, as before: 14 times the disk
    # writes.
    state_journal_samples: int = Field(default=100_000, ge=0)


class PlantBridgeConfig(StrictModel):
    gateway: GatewaySettings = GatewaySettings()
    buffer: OutboxConfig = OutboxConfig()
    http: HttpConfig = HttpConfig()
    rules: RulesConfig = RulesConfig()
    forwarding: ForwardingConfig = ForwardingConfig()
    alarms: AlarmsConfig = AlarmsConfig()  # roll-up of floods, chattering (gateway/rollup.py)
    sources: list[SourceConfig] = []
    upstreams: list[UpstreamConfig] = []

    @model_validator(mode="before")
    @classmethod
    def _site_to_backbone(cls, raw: Any) -> Any:
        ups = raw.get("upstreams") if isinstance(raw, dict) else None
        if not isinstance(ups, list) or not any(isinstance(u, dict) and u.get("type") == "nats"
                                                for u in ups):
            return raw  # no backbone: the NATS modules stay unloaded
        from gateway.upstream.nats_config import inherit_site

        return inherit_site(raw)  # a nats upstream names the [gateway] site unless it says

    def outbox_path(self) -> Path:
        return self.buffer.resolved_path(self.gateway.state_dir)


class SecretScope(enum.StrEnum):
    """Which secrets must be readable now. Components read their secrets when they start, so a
    command checks up front only those of the components it starts: a technician's `record`
    or `check --rules-only` never fails on an upstream token it has no use for."""

    ALL = "all"  # run, check, reload
    SOURCES = "sources"  # record: starts sources only
    NONE = "none"  # check --rules-only, offline tools


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    where: str  # component name or rule id, or "" when the file as a whole is wrong
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        parts = [self.file if self.line is None else f"{self.file}:{self.line}"]
        if self.where:
            parts.append(self.where)
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + f": {self.message}"


class ConfigError(Exception):
    """Every problem found; each renders as one line: file, component or rule, field, words.

    `str()` is the one-line form (problems joined by "; "), fit for a single log record;
    `problems` holds them one by one for a terminal.
    """

    def __init__(self, problems: Sequence[Problem | RuleProblem | RegistryProblem]) -> None:
        self.problems = list(problems)
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return "; ".join(str(p) for p in self.problems)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    path: Path
    config: PlantBridgeConfig
    rules: RuleSet
    rule_files: tuple[Path, ...]
    # Its identities are already merged into `config.upstreams[*].asset_map`.
    registry: Registry = field(default_factory=Registry.empty)


@dataclass(frozen=True, slots=True)
class Examined:
    """What `examine` found: all problems, all warnings, and the config when there is none."""

    problems: list[Problem | RuleProblem | RegistryProblem]
    warnings: list[Problem | RuleProblem | RegistryProblem]
    loaded: LoadedConfig | None
    rules: RuleSet | None  # the rule set whenever the rule files are valid


_UNION_TAGS = {"mqtt", "opcua", "modbus", "rest", "sap_pm", "maximo", "uns", "nats"}
_GROUPS = ("sources", "upstreams")


def _strip_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """pydantic puts the union tag after a component's index: sources.0.mqtt.port."""
    return tuple(x for i, x in enumerate(loc)
                 if not (i == 2 and loc[0] in _GROUPS and x in _UNION_TAGS))


def _where(raw: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[str, str]:
    """Name the component (by its `name`) and the field path inside it."""
    if len(loc) >= 2 and loc[0] in _GROUPS and isinstance(loc[1], int):
        items = raw.get(str(loc[0]), [])
        name = items[loc[1]].get("name") if loc[1] < len(items) and isinstance(
            items[loc[1]], dict) else None
        label = f"{loc[0]}[{loc[1]}]" + (f" '{name}'" if name else "")
        return label, _dotted(loc[2:])
    return "", _dotted(loc)


def _dotted(loc: Sequence[int | str]) -> str:
    """A field path as written about in the docs: `subscriptions[1].pattern`."""
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")


def _plain(err: dict[str, Any], field: str) -> str:
    """A pydantic error in a technician's words (the same words the rule files use)."""
    kind, got = err["type"], err.get("input")
    name = field.rsplit(".", 1)[-1]
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", got)
        return f"unknown type {tag!r}; known: {err.get('ctx', {}).get('expected_tags', '')}"
    if kind == "string_pattern_mismatch":  # never show the bare regex
        if name.endswith("url") and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(got)):
            return f"{name} {got!r} needs a scheme: http://... or https://..."
        if name.endswith("url"):
            return f"{name} {got!r} must be http:// or https:// and a host (and port), no spaces"
        if name == "endpoint":
            return f"endpoint {got!r} must start with opc.tcp://, e.g. opc.tcp://plc.local:4840"
        return f"{got!r} is not written the way this field expects (see config/examples/)"
    if kind in ("int_parsing", "int_type", "int_from_float") and name == "port":
        return f"must be a port number from 1 to 65535, without quotes, not {got!r}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):  # a model / a dataclass
        return "unknown key (check the spelling; see config/examples/)"
    if kind == "list_type":
        return f"must be a list in brackets, e.g. [\"a\", \"b\"], not {got!r}"
    return plain_words(err, ())[1]


def _model_problems(raw: dict[str, Any], file: str, lines: TomlLines,
                    groups: Sequence[str] | None) -> list[Problem]:
    """Every validation problem of the main file, each with its line; `groups` limits them to
    those top-level keys."""
    problems: list[Problem] = []
    try:
        PlantBridgeConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _strip_tags(tuple(err["loc"]))
            if groups is not None and (not loc or loc[0] not in groups):
                continue
            where, fld = _where(raw, loc)
            problems.append(Problem(file, where, fld, _plain(dict(err), fld), lines.line(loc)))
    for group in _GROUPS:  # read from the raw lists: reported even beside other mistakes
        items = raw.get(group)
        if (groups is not None and group not in groups) or not isinstance(items, list):
            continue
        seen: set[str] = set()
        for i, item in enumerate(items):
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and name in seen:
                problems.append(Problem(file, f"{group}[{i}] '{name}'", "name",
                                        "duplicate name", lines.line((group, i, "name"))))
            if isinstance(name, str):
                seen.add(name)
    return problems


def validate(raw: dict[str, Any], file: str, text: str = "") -> PlantBridgeConfig:
    """The main config, or `ConfigError` with every problem (lines when `text` is given)."""
    problems = _model_problems(raw, file, TomlLines(text), None)
    if problems:
        raise ConfigError(problems)
    return PlantBridgeConfig.model_validate(raw)


def _secrets(obj: object, where: str) -> list[tuple[str, Secret]]:
    """Every Secret inside a config model, with its dotted field path."""
    if isinstance(obj, Secret):
        return [(where, obj)]
    found: list[tuple[str, Secret]] = []
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            found += _secrets(getattr(obj, name), f"{where}.{name}" if where else name)
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            found += _secrets(item, f"{where}[{i}]")
    return found


def _component_secret_problems(group: str, i: int, item: BaseModel, name: str, file: str,
                               lines: TomlLines | None = None) -> list[Problem]:
    problems = []
    for fld, secret in _secrets(item, ""):
        try:
            secret.reveal()
        except ValueError as exc:
            path = tuple(int(x) if x.isdigit() else x for x in re.split(r"[.\[\]]+", fld) if x)
            line = lines.line((group, i, *path)) if lines is not None else None
            problems.append(Problem(file, f"{group}[{i}] '{name}'", fld, str(exc), line))
    return problems


def _http_token_problems(raw: dict[str, Any], file: str, lines: TomlLines) -> list[Problem]:
    """The status page's token is read at start: a missing file is said by `check`."""
    try:
        token = HttpConfig.model_validate(raw.get("http", {})).token
    except ValidationError:
        return []  # reported with the rest of the file
    try:
        if token is not None:
            token.reveal()
    except ValueError as exc:
        return [Problem(file, "http", "token", str(exc), lines.line(("http", "token")))]
    return []


def secret_problems(cfg: PlantBridgeConfig, file: str,
                    scope: SecretScope = SecretScope.ALL) -> list[Problem]:
    """A secret that cannot be read now would stop a component at start: say so up front."""
    problems = []
    for group, items in (("sources", cfg.sources), ("upstreams", cfg.upstreams)):
        if scope is SecretScope.NONE or (scope is SecretScope.SOURCES and group != "sources"):
            continue
        for i, item in enumerate(items):
            problems += _component_secret_problems(group, i, item, item.name, file)
    return problems


def rule_files(cfg: PlantBridgeConfig | RulesConfig, config_file: Path,
               lines: TomlLines | None = None) -> tuple[list[Path], list[Problem]]:
    rules_cfg = cfg.rules if isinstance(cfg, PlantBridgeConfig) else cfg
    base = config_file.parent
    files: list[Path] = []
    problems: list[Problem] = []
    for pattern in rules_cfg.files:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        found = sorted(Path(p) for p in glob.glob(full))
        if not found:
            line = lines.line(("rules", "files")) if lines is not None else None
            problems.append(Problem(str(config_file), "rules", "files",
                                    f"{pattern!r} matches no rule file", line))
        files.extend(found)
    return files, problems


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The text and the TOML of the main file, or ConfigError saying why not (with a line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), "", "", f"cannot read the file: {exc}")]) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise ConfigError([Problem(str(path), "", "", f"not valid TOML: {msg.lower()}",
                                   int(m.group(1)) if m else None)]) from None


_SOURCE = TypeAdapter(SourceConfig)
_UPSTREAM = TypeAdapter(UpstreamConfig)


def _valid_items(raw: dict[str, Any], group: str) -> list[tuple[int, Any]]:
    """The components of a group that are valid on their own (the others are reported)."""
    adapter: TypeAdapter[Any] = _SOURCE if group == "sources" else _UPSTREAM
    out = []
    items = raw.get(group)
    for i, item in enumerate(items if isinstance(items, list) else []):
        try:
            out.append((i, adapter.validate_python(item)))
        except ValidationError:
            continue
    return out


def examine(path: Path, *, overrides: dict[str, Any] | None = None,
            secrets: SecretScope = SecretScope.ALL, rules_only: bool = False) -> Examined:
    """Every problem of the main file and of every rule file, in one pass, and warnings.

    Each part is looked at even when another is wrong: the rule files named by a valid `[rules]`
    table are read beside a broken `[[sources]]`, and each component's secrets are tried when
    that component is valid. `rules_only` reports only `[rules]`, the rule files, and rules that
    no source can feed: no secrets, no other part of the main file.
    """
    file = str(path)
    try:
        text, raw = _read(path)
    except ConfigError as exc:
        return Examined(exc.problems, [], None, None)
    for key, value in (overrides or {}).items():
        raw.setdefault(key, {}).update(value)
    lines = TomlLines(text)
    problems: list[Problem | RuleProblem | RegistryProblem] = []
    problems += _model_problems(raw, file, lines, ("rules",) if rules_only else None)
    warnings: list[Problem | RuleProblem | RegistryProblem] = []
    rules: RuleSet | None = None
    files: list[Path] = []
    in_rules: list[RuleProblem] = []
    try:
        rules_cfg = RulesConfig.model_validate(raw.get("rules", {}))
    except ValidationError:
        pass  # reported above
    else:
        files, found = rule_files(rules_cfg, path, lines)
        problems += found
        try:
            rules = load_rule_files(files)
        except RuleFileError as exc:
            in_rules = exc.problems  # shown after the main file's own problems
    sources = _valid_items(raw, "sources")
    if not rules_only and secrets is not SecretScope.NONE:
        for group, items in (("sources", sources), ("upstreams", _valid_items(raw, "upstreams"))):
            if secrets is SecretScope.ALL or group == "sources":
                for i, item in items:
                    problems += _component_secret_problems(group, i, item, item.name, file, lines)
    if not rules_only and secrets is SecretScope.ALL:
        problems += _http_token_problems(raw, file, lines)
    problems += in_rules
    raw_sources = raw.get("sources")
    all_valid = isinstance(raw_sources, list) and len(sources) == len(raw_sources)
    # what each source can deliver, worked out once for the rules and the valid ranges
    produced = [item.produces() for _, item in sources]
    if rules is not None and sources and all_valid:  # else we cannot tell what is produced
        errors, unsure = rule_coverage(rules, produced)
        problems += errors
        index = {item.name: i for i, item in sources}
        for (source, route), rule_ids in unsure.items():
            i = index[source]
            warnings.append(Problem(file, f"sources[{i}] '{source}'", "",
                                    unsure_words(route, rule_ids), lines.line(("sources", i))))
    if not rules_only:  # a valid range its own source cannot deliver checks nothing
        for (i, item), delivers in zip(sources, produced, strict=True):
            for k, r in enumerate(item.valid_ranges):
                words = range_coverage(r.asset_pattern, r.signal, delivers)
                if words is not None:
                    problems.append(Problem(file, f"sources[{i}] '{item.name}'",
                                            f"valid_ranges[{k}]", words,
                                            lines.line(("sources", i, "valid_ranges", k))))
    registry, registry_file = Registry.empty(), registry_path(raw.get("gateway"), path)
    registry_ok = True
    if registry_file is not None and not rules_only:
        try:
            registry = load_registry(registry_file)
        except RegistryFileError as exc:
            problems += exc.problems
            registry_ok = False  # its mistakes are said; "cannot map" for each asset is noise
    if rules is not None and not rules_only and registry_ok:
        upstreams = [item for _, item in _valid_items(raw, "upstreams")]
        found_errors, notes = registry_findings(registry, upstreams, rules, config_file=file,
                                                registry_configured=registry_file is not None)
        problems += found_errors
        warnings += notes
    loaded = None
    if not problems and rules is not None:
        try:
            cfg = PlantBridgeConfig.model_validate(raw)
            cfg = cfg.model_copy(update={"upstreams": [
                with_workflow(with_registry(u, registry), registry, rules)
                for u in cfg.upstreams]})
            loaded = LoadedConfig(path, cfg, rules, tuple(files), registry)
        except ValidationError:
            loaded = None  # rules_only: the rest of the file is not ours to judge
    return Examined(problems, warnings, loaded, rules)


def load(path: Path, *, overrides: dict[str, Any] | None = None,
         secrets: SecretScope = SecretScope.ALL) -> LoadedConfig:
    """Load and validate a config file and every rule file it names, or raise ConfigError
    with every problem."""
    found = examine(path, overrides=overrides, secrets=secrets)
    if found.problems or found.loaded is None:
        raise ConfigError(found.problems)
    return found.loaded
