"""The per-rule `existing_work` policy: from the rule file to the upstream configs that use it
(gateway/workflow.py `with_workflow`), never a change of the rule's behaviour fingerprint, and
a wrong value refused by `check` with the rule and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.upstream.maximo_config import MaximoSinkConfig
from gateway.upstream.sap_pm_config import SapPmSinkConfig
from gateway.workflow import ExistingWork
from rules.build import fingerprint
from rules.loader import load_rule_files

RULE = """
[[rule]]
id = "bearing-wear"
kind = "threshold"
asset = "pump-1"
signal = "vibration"
above = 7.1
failure_code = "BEARING"
{policy}
"""

CONFIG = """
[gateway]
site = "t"
state_dir = "{state}"
assets_file = "assets.toml"

[rules]
files = ["rules.toml"]

[[upstreams]]
type = "sap_pm"
name = "sap"
sap_client = "100"
base_url = "http://127.0.0.1:9"
auth = {{ kind = "basic", user = "U", password = {{ value = "p" }} }}

[[upstreams]]
type = "maximo"
name = "maximo"
base_url = "http://127.0.0.1:9"
auth = {{ kind = "api_key", key = {{ value = "k" }} }}
siteid = "BEDFORD"
"""

ASSETS = """
[assets.pump-1]
sap = { equipment = "4711" }
maximo = { assetnum = "P-1" }

[[assets.pump-1.spare_parts.BEARING]]
material = "BRG-6205"
quantity = 2
unit = "EA"
plant = "1010"
storage_location = "0001"
reorder_level = 4
"""


def write(tmp: Path, policy: str) -> Path:
    (tmp / "rules.toml").write_text(RULE.format(policy=policy))
    (tmp / "assets.toml").write_text(ASSETS)
    path = tmp / "plantbridge.toml"
    path.write_text(CONFIG.format(state=tmp / "state"))
    return path


def test_policy_and_parts_reach_the_upstreams(tmp_path: Path) -> None:
    loaded = config_mod.load(write(tmp_path, 'existing_work = "link"'))
    sap, maximo = loaded.config.upstreams
    assert isinstance(sap, SapPmSinkConfig) and isinstance(maximo, MaximoSinkConfig)
    assert sap.existing_work_rules == {"bearing-wear": ExistingWork.LINK}
    assert maximo.existing_work_rules == {"bearing-wear": ExistingWork.LINK}
    [part] = sap.spare_parts["pump-1"]["BEARING"]
    assert (part.material, part.reorder_level) == ("BRG-6205", 4)


def test_the_policy_is_not_rule_behaviour(tmp_path: Path) -> None:
    prints = []
    for policy in ("", 'existing_work = "skip"'):
        (tmp_path / "r.toml").write_text(RULE.format(policy=policy))
        [rule] = load_rule_files([tmp_path / "r.toml"]).rules
        prints.append(fingerprint(rule.spec, "pump-1"))
    assert prints[0] == prints[1]


def test_a_wrong_policy_is_refused_with_its_rule(tmp_path: Path) -> None:
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.load(write(tmp_path, 'existing_work = "merge"'))
    said = str(err.value)
    assert "bearing-wear" in said and "existing_work" in said
