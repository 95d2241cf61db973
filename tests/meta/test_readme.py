"""The README's configuration reference stays true: its YAML example loads, and every
configuration key the parser accepts is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from forwarder import config
from forwarder.config import model, parse

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_readme_has_a_reference() -> None:
    assert yaml_blocks()


@pytest.mark.parametrize("block", yaml_blocks())
def test_yaml_examples_are_valid(block: str, tmp_path: Path) -> None:
    data = yaml.safe_load(block)
    for rule in data.get("zones", []):
        rule.pop("hosts_file", None)
    data.pop("hooks", None)  # the example hook file is not shipped at that path
    config.from_data(data, "README.md")


def documented_keys() -> set[str]:
    keys: set[str] = set()
    for block in yaml_blocks():
        for line in block.splitlines():
            keys.update(re.findall(r"([a-z_0-9]+):", line))
    return keys


@pytest.mark.parametrize("keys", [
    parse.TOP_KEYS, parse.GROUP_KEYS, parse.HEALTH_KEYS, parse.RULE_KEYS, parse.POLICY_KEYS,
    set(model.CacheSettings.__dataclass_fields__), set(model.RateLimit.__dataclass_fields__),
    set(model.Limits.__dataclass_fields__), set(model.QueryLogSettings.__dataclass_fields__),
], ids=["top", "group", "health", "rule", "policy", "cache", "rate_limit", "limits", "querylog"])
def test_every_key_is_documented(keys: set[str]) -> None:
    missing = sorted(set(keys) - documented_keys())
    assert not missing, f"not in the README's reference: {missing}"
