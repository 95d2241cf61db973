"""The README's configuration reference stays true: its YAML example loads, and every
configuration key the parser accepts is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forwarder import config
from forwarder.config import acl, model, schema, source

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_readme_has_a_reference() -> None:
    assert yaml_blocks()


@pytest.mark.parametrize("block", yaml_blocks())
def test_yaml_examples_are_valid(block: str, tmp_path: Path) -> None:
    data, positions, problems = source.read(block)
    assert problems == []  # no key twice
    for rule in data.get("zones", []):
        rule.pop("hosts_file", None)
    data.pop("hooks", None)  # the example hook file is not shipped at that path
    config.from_data(data, "README.md", positions)


def documented_keys() -> set[str]:
    keys: set[str] = set()
    for block in yaml_blocks():
        for line in block.splitlines():
            keys.update(re.findall(r"([a-z_0-9]+):", line))
    return keys


SECTIONS = [model.Config, model.Listener, model.UpstreamGroup, model.HealthCheck,
            model.Canary, model.TlsSettings, model.Rule, model.LocalRecord, model.Policy,
            model.CacheSettings, model.RateLimit, model.Limits, model.MetricsSettings,
            model.QueryLogSettings, model.ReloadSettings, model.LogSettings,
            model.HookSettings, model.AwsSettings]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda c: c.__name__)
def test_every_key_is_documented(section: type) -> None:
    missing = sorted(schema.keys(section) - documented_keys())
    assert not missing, f"not in the README's reference: {missing}"


def test_acl_keys_are_documented() -> None:
    assert documented_keys() >= acl.KEYS
