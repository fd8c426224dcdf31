"""Locating keys of the main config by the path pydantic reports."""

from __future__ import annotations

from gateway.tomllines import TomlLines

TEXT = """\
[gateway]
site = "a"

[[sources]]
name = "one"
port = 1

[[sources.subscriptions]]
pattern = "a/+asset/+signal"

[[sources]]
name = "two"
tls = { ca_file = "x", verify = false }

[[sources.subscriptions]]
pattern = "b"

[[sources.subscriptions]]
pattern = "c"
"x.y" = 1
"""


def test_keys_tables_and_array_elements() -> None:
    lines = TomlLines(TEXT)
    assert lines.line(("gateway", "site")) == 2
    assert lines.line(("sources", 0)) == 4
    assert lines.line(("sources", 0, "port")) == 6
    assert lines.line(("sources", 0, "subscriptions", 0, "pattern")) == 9
    assert lines.line(("sources", 1, "name")) == 12
    assert lines.line(("sources", 1, "tls", "verify")) == 13  # inside an inline table
    assert lines.line(("sources", 1, "subscriptions", 1, "pattern")) == 19
    assert lines.line(("sources", 1, "subscriptions", 1, "x.y")) == 20


def test_unknown_paths_fall_back_to_the_nearest_parent() -> None:
    lines = TomlLines(TEXT)
    assert lines.line(("sources", 1, "subscriptions", 1, "qos")) == 18
    assert lines.line(("sources", 0, "host")) == 4
    assert lines.line(("upstreams", 0, "base_url")) is None
    assert lines.line(()) is None
