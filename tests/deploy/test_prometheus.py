"""deploy/prometheus/: the alert rules pass `promtool check rules`, their unit tests pass
`promtool test rules` (and fail when a rule is broken), and every series they read is one
the forwarder exports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.promql import exported, names_in, promtool

DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DIR / "forwarder-rules.yaml"
TESTS = DIR / "forwarder-rules.test.yaml"
ALERTS = {"ForwarderUpstreamGroupDown", "ForwarderCanaryFailing", "ForwarderPolicyViolations",
          "ForwarderHighServfailRatio", "ForwarderReloadFailed", "ForwarderQueryLogDropping",
          "ForwarderAwsInventoryStale", "ForwarderAwsRefreshFailing"}


def rules() -> list[dict[str, str]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_cover_every_alert() -> None:
    tested = {t["alertname"] for case in yaml.safe_load(TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert {r["alert"] for r in rules()} == ALERTS == tested


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """A SERVFAIL threshold raised from 5% to 20% no longer fires on the 10% case."""
    shutil.copy(TESTS, tmp_path / TESTS.name)
    text = RULES.read_text()
    assert ") > 0.05" in text
    (tmp_path / RULES.name).write_text(text.replace(") > 0.05", ") > 0.2"))
    result = promtool("test", "rules", tmp_path / TESTS.name)
    assert result.returncode != 0
    assert "ForwarderHighServfailRatio" in result.stdout + result.stderr


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_rules_read_exported_series(rule: dict[str, str]) -> None:
    used = names_in(rule["expr"])
    assert used, "a rule that reads no forwarder series"
    assert used <= exported(), f"not exported by forwarder/metrics.py: {used - exported()}"
