"""The root config: composes each component's own model; reports problems in plain words.

`load(path)` returns a fully validated config plus its rule set, or raises `ConfigError` with one
`Problem` per mistake (file, component or rule id, field, message). Nothing half-valid is ever
returned, so a bad file can never replace a good running config.
"""

from __future__ import annotations

import glob
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from buffer.config import OutboxConfig
from drivers.modbus.config import ModbusSourceConfig
from drivers.mqtt.config import MqttSourceConfig
from drivers.opcua.config import OpcUaSourceConfig
from gateway.settings import Secret, StrictModel
from gateway.upstream.forwarder import ForwardingConfig
from gateway.upstream.maximo import MaximoSinkConfig
from gateway.upstream.rest import RestSinkConfig
from gateway.upstream.sap_pm import SapPmSinkConfig
from rules import RuleFileError, RuleProblem, RuleSet, load_rule_files

SourceConfig = Annotated[
    MqttSourceConfig | OpcUaSourceConfig | ModbusSourceConfig, Field(discriminator="type")
]
UpstreamConfig = Annotated[
    RestSinkConfig | SapPmSinkConfig | MaximoSinkConfig, Field(discriminator="type")
]


class GatewaySettings(StrictModel):
    site: str = "plant"
    state_dir: Path = Path("/var/lib/plantbridge")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"


class HttpConfig(StrictModel):
    enabled: bool = True
    listen_host: str = "127.0.0.1"
    port: int = Field(default=8380, ge=0, le=65535)


class RulesConfig(StrictModel):
    files: list[str] = ["rules.d/*.toml"]  # globs, relative to the config file
    tick_seconds: float = Field(default=1.0, gt=0)


class PlantBridgeConfig(StrictModel):
    gateway: GatewaySettings = GatewaySettings()
    buffer: OutboxConfig = OutboxConfig()
    http: HttpConfig = HttpConfig()
    rules: RulesConfig = RulesConfig()
    forwarding: ForwardingConfig = ForwardingConfig()
    sources: list[SourceConfig] = []
    upstreams: list[UpstreamConfig] = []

    def outbox_path(self) -> Path:
        return self.buffer.resolved_path(self.gateway.state_dir)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    where: str  # component name or rule id, or "" when the file as a whole is wrong
    field: str
    message: str

    def __str__(self) -> str:
        parts = [self.file]
        if self.where:
            parts.append(self.where)
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + f": {self.message}"


class ConfigError(Exception):
    """Every problem found; each renders as one line: file, component or rule, field, words."""

    def __init__(self, problems: Sequence[Problem | RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    path: Path
    config: PlantBridgeConfig
    rules: RuleSet
    rule_files: tuple[Path, ...]


def _where(raw: dict[str, Any], loc: tuple[int | str, ...]) -> tuple[str, str]:
    """Name the component (by its `name`) and the field path inside it."""
    if len(loc) >= 2 and loc[0] in ("sources", "upstreams") and isinstance(loc[1], int):
        items = raw.get(str(loc[0]), [])
        name = items[loc[1]].get("name") if loc[1] < len(items) and isinstance(
            items[loc[1]], dict) else None
        label = f"{loc[0]}[{loc[1]}]" + (f" '{name}'" if name else "")
        rest = [str(x) for x in loc[2:] if not (isinstance(x, str) and x in _UNION_TAGS)]
        return label, ".".join(rest)
    return "", ".".join(str(x) for x in loc)


_UNION_TAGS = {"mqtt", "opcua", "modbus", "rest", "sap_pm", "maximo"}


def _plain(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see config/examples/)"
    if kind == "missing":
        return "required, but missing"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", err.get("input"))
        return f"unknown type {tag!r}; known: {err.get('ctx', {}).get('expected_tags', '')}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def parse_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), "", "", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(str(path), "", "", f"not valid TOML: {exc}")]) from None


def validate(raw: dict[str, Any], file: str) -> PlantBridgeConfig:
    try:
        cfg = PlantBridgeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where, fld = _where(raw, tuple(err["loc"]))
            problems.append(Problem(file, where, fld, _plain(dict(err))))
        raise ConfigError(problems) from None
    problems = []
    for group, items in (("sources", cfg.sources), ("upstreams", cfg.upstreams)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.name in seen:
                problems.append(Problem(file, f"{group}[{i}] '{item.name}'", "name",
                                        "duplicate name"))
            seen.add(item.name)
    if problems:
        raise ConfigError(problems)
    return cfg


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


def secret_problems(cfg: PlantBridgeConfig, file: str) -> list[Problem]:
    """A secret that cannot be read now would stop a component at start: say so up front."""
    problems = []
    for group, items in (("sources", cfg.sources), ("upstreams", cfg.upstreams)):
        for i, item in enumerate(items):
            for fld, secret in _secrets(item, ""):
                try:
                    secret.reveal()
                except ValueError as exc:
                    problems.append(Problem(file, f"{group}[{i}] '{item.name}'", fld, str(exc)))
    return problems


def rule_files(cfg: PlantBridgeConfig, config_file: Path) -> tuple[list[Path], list[Problem]]:
    base = config_file.parent
    files: list[Path] = []
    problems: list[Problem] = []
    for pattern in cfg.rules.files:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        found = sorted(Path(p) for p in glob.glob(full))
        if not found:
            problems.append(Problem(str(config_file), "rules", "files",
                                    f"{pattern!r} matches no rule file"))
        files.extend(found)
    return files, problems


def load(path: Path, *, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """Load and validate a config file and every rule file it names."""
    raw = parse_toml(path)
    for key, value in (overrides or {}).items():
        raw.setdefault(key, {}).update(value)
    cfg = validate(raw, str(path))
    files, problems = rule_files(cfg, path)
    problems.extend(secret_problems(cfg, str(path)))
    if problems:
        raise ConfigError(problems)
    try:
        rules = load_rule_files(files)
    except RuleFileError as exc:
        raise ConfigError(exc.problems) from None
    return LoadedConfig(path, cfg, rules, tuple(files))
