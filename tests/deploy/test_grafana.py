"""deploy/grafana/: the dashboard's every expression names only series the forwarder
exports, and parses as PromQL (promtool, with Grafana's variables given values)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import exported, names_in, promtool

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "forwarder-dashboard.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$instance": ".*"}


def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in items:
        out.append(p)
        out.extend(panels(p.get("panels", [])))
    return out


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in panels(dashboard()["panels"]) for t in p.get("targets", [])]


def test_every_panel_queries_something() -> None:
    for p in panels(dashboard()["panels"]):
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
            assert p["datasource"]["uid"] == "${datasource}", p["title"]


@pytest.mark.parametrize("expr", expressions())
def test_expression_names_exported_series(expr: str) -> None:
    used = names_in(expr)
    assert used, "an expression that reads no forwarder series"
    assert used <= exported(), f"not exported by forwarder/metrics.py: {used - exported()}"


def test_instance_variable_reads_an_exported_series() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert names_in(variables["instance"]["definition"]) <= exported()


def test_expressions_parse_as_promql(tmp_path: Path) -> None:
    """Each expression as a recording rule: promtool parses it the way Prometheus will."""
    records = []
    for i, expr in enumerate(expressions()):
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        records.append({"record": f"dashboard:expr{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
