"""Source and upstream configs chosen by their `type`, imported when a config names the type.

`[[sources]]` and `[[upstreams]]` hold one model per component kind, picked by `type`. A
pydantic discriminated union would import every kind's config module for every config, and
with them what they import (the NATS client, the OPC UA and Modbus models): about 2 MB of an
idle gateway's memory for kinds it does not use. Here a kind's module loads the first time a
config names it.

Errors read as the union's did, so `check` and the relay word them the same: a missing or
unknown `type` is `union_tag_not_found` / `union_tag_invalid` (with the known tags), a
non-table is `model_attributes_type`, and a component's own errors keep their place
(`sources.0.port`; the union put the tag in between, which `config._strip_tags` removes).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, PlainValidator
from pydantic_core import PydanticCustomError

from drivers import CONFIGS as SOURCE_CONFIGS

# Upstream sink configs by `type`, as "module:Class" (the sink modules load on `build()`).
UPSTREAM_CONFIGS: dict[str, str] = {
    "rest": "gateway.upstream.rest_config:RestSinkConfig",
    "sap_pm": "gateway.upstream.sap_pm_config:SapPmSinkConfig",
    "maximo": "gateway.upstream.maximo_config:MaximoSinkConfig",
    "uns": "gateway.upstream.uns_config:UnsSinkConfig",
    "nats": "gateway.upstream.nats_config:NatsSinkConfig",
}


def config_class(kinds: Mapping[str, str], kind: str) -> type[BaseModel]:
    """The config model of `kind`, its module imported now if it was not yet."""
    module, name = kinds[kind].split(":")
    cls: type[BaseModel] = getattr(importlib.import_module(module), name)
    return cls


class ByType:
    """Validates one table with the model its `type` names (a pydantic plain validator)."""

    def __init__(self, kinds: Mapping[str, str]) -> None:
        self.kinds = kinds
        self._expected = ", ".join(repr(k) for k in kinds)

    def __call__(self, value: Any) -> BaseModel:
        if isinstance(value, BaseModel):  # built already (a test, model_copy): kept as it is
            kind = getattr(value, "type", None)
            if isinstance(kind, str) and kind in self.kinds and isinstance(
                    value, config_class(self.kinds, kind)):
                return value
            raise PydanticCustomError("model_type", "Input should be one of the {expected} "
                                      "configs", {"expected": self._expected})
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from")
        if "type" not in value:
            raise PydanticCustomError("union_tag_not_found",
                                      "Unable to extract tag using discriminator {discriminator}",
                                      {"discriminator": "'type'"})
        tag = value["type"]
        if not isinstance(tag, str) or tag not in self.kinds:
            raise PydanticCustomError(
                "union_tag_invalid",
                "Input tag '{tag}' found using {discriminator} does not match any of the "
                "expected tags: {expected_tags}",
                {"discriminator": "'type'", "tag": str(tag), "expected_tags": self._expected})
        # Its ValidationError carries each problem's place inside the table; pydantic puts
        # the list index in front, as it did for the union.
        return config_class(self.kinds, tag).model_validate(value)


SOURCE_VALIDATOR = PlainValidator(ByType(SOURCE_CONFIGS))
UPSTREAM_VALIDATOR = PlainValidator(ByType(UPSTREAM_CONFIGS))
