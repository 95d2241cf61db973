"""What the deploy/ assets' PromQL may name: the series forwarder/metrics.py exports, and
promtool, the real Prometheus parser and rule evaluator."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client.metrics_core import Metric

from forwarder import metrics
from tests.e2e.test_interop import need

METRIC_NAME = re.compile(r"\b(forwarder_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",), "info": ("_info",), "summary": ("", "_sum", "_count")}


def exported() -> set[str]:
    """Every series name /metrics can carry, from the registry's metric families (also
    those without samples yet: a labelled metric no query has touched)."""
    families: list[Metric] = list(metrics.REGISTRY.collect())
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def names_in(expr: str) -> set[str]:
    """The forwarder series an expression reads."""
    return set(METRIC_NAME.findall(expr))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs promtool (Debian's `prometheus` package; .ci/run installs it)."""
    return subprocess.run([need("promtool"), *map(str, args)], capture_output=True,
                          text=True, timeout=60, check=False)
