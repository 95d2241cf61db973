"""Metric names and labels: Prometheus conventions, bounded label sets, the exported list.

The exposition text is what a scraper sees, so most checks read `generate_latest`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from forwarder import metrics

# Per-query values: a label holding one would make a series per client or per name.
FORBIDDEN_LABELS = {"name", "qname", "query", "domain", "client", "client_ip", "address",
                    "ip", "source", "id", "answer"}
NAME = re.compile(r"^forwarder_[a-z][a-z0-9_]*[a-z0-9]$")
BASE_UNITS = ("_seconds", "_bytes")

# The issue's list: every metric the README documents, with its exact labels.
EXPECTED = {
    "forwarder_queries_total": {"protocol", "rule", "qtype"},
    "forwarder_responses_total": {"protocol", "rule", "rcode"},
    "forwarder_request_duration_seconds": {"protocol", "rule"},
    "forwarder_upstream_queries_total": {"group", "server", "transport"},
    "forwarder_upstream_errors_total": {"group", "server", "kind"},
    "forwarder_upstream_duration_seconds": {"group", "server"},
    "forwarder_upstream_healthy": {"group", "server"},
    "forwarder_upstream_canary_ok": {"group"},
    "forwarder_upstream_health_checks_total": {"group", "server", "result"},
    "forwarder_policy_verdicts_total": {"policy", "rule", "action", "mode", "where"},
    "forwarder_hook_trusted_answers_total": {"hook"},
    "forwarder_acl_refused_total": set(),
    "forwarder_malformed_total": {"kind"},
    "forwarder_inflight_queries": set(),
    "forwarder_tcp_connections": set(),
    "forwarder_config_reloads_total": {"result"},
    "forwarder_config_last_reload_success_timestamp_seconds": set(),
    "forwarder_querylog_dropped_total": set(),
    "forwarder_build_info": {"version", "python"},
}


def declared() -> list[MetricWrapperBase]:
    return [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


def exposed_name(metric: MetricWrapperBase) -> str:
    """The family name as exposed: counters gain `_total`, info metrics `_info`."""
    family = metric.describe()[0]
    suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
    return family.name + suffix


def exposition() -> dict[str, str]:
    """{metric family name: type} from the text a scraper receives."""
    text = generate_latest(metrics.REGISTRY).decode()
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def test_every_declared_metric_is_in_the_one_registry() -> None:
    exposed = exposition()
    for metric in declared():
        assert exposed_name(metric) in exposed, exposed_name(metric)


def test_names_follow_prometheus_conventions() -> None:
    """forwarder_ prefix, snake case, `_total` only and always on counters, histograms in a
    base unit, no `_created` companions (they are disabled)."""
    exposed = exposition()
    assert exposed, "nothing exported"
    for name, kind in exposed.items():
        assert NAME.match(name), name
        assert not name.endswith("_created"), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), f"{name} is a {kind}, not a counter"
        if kind == "histogram":
            assert name.endswith(BASE_UNITS), f"{name}: histograms need a base unit"
        assert not re.search(r"_(milliseconds|ms|microseconds|kilobytes|minutes)(_|$)", name)


def test_every_metric_has_help_text() -> None:
    for metric in declared():
        family = metric.describe()[0]
        assert len(family.documentation) > 10, family.name
        assert family.documentation.endswith("."), family.name


def test_labels_are_bounded_and_snake_case() -> None:
    for metric in declared():
        labels = set(metric._labelnames)
        assert not labels & FORBIDDEN_LABELS, (exposed_name(metric), labels & FORBIDDEN_LABELS)
        for label in labels:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", label), label


@pytest.mark.parametrize(("name", "labels"), sorted(EXPECTED.items()))
def test_issue_metric_exists_with_its_labels(name: str, labels: set[str]) -> None:
    by_name = {exposed_name(m): m for m in declared()}
    assert name in by_name, f"{name} is not declared"
    metric = by_name[name]
    if name == "forwarder_build_info":
        return  # an Info's labels are its keys: checked below
    assert set(metric._labelnames) == labels


def test_build_info_exports_version_and_python() -> None:
    text = generate_latest(metrics.REGISTRY).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["forwarder_build_info"].samples  # the text format has no info type
    assert sample.name == "forwarder_build_info"
    assert set(sample.labels) == {"version", "python"}
    assert sample.value == 1.0


def test_histograms_use_the_shared_time_buckets() -> None:
    for metric in declared():
        if metric.describe()[0].type == "histogram":
            assert tuple(metric._upper_bounds[:-1]) == metrics.TIME_BUCKETS


@pytest.mark.parametrize(("qtype", "label"), [
    (1, "A"), (28, "AAAA"), (65, "HTTPS"), (12, "PTR"), (255, "ANY"),
    (99, "other"), (65_000, "other"), (252, "other"),  # unlisted types and AXFR fold away
])
def test_query_types_fold_to_a_fixed_set(qtype: int, label: str) -> None:
    assert metrics.qtype_label(qtype) == label


def test_qtype_and_rcode_labels_are_bounded() -> None:
    qtypes = {metrics.qtype_label(t) for t in range(65_536)}
    assert qtypes == metrics.FOLDED_QTYPES | {"other"}
    rcodes = {metrics.rcode_label(r) for r in range(4_096)}
    assert rcodes == metrics.FOLDED_RCODES | {"other"}


# --- multiprocess mode (`workers:` above 1) -----------------------------------------------

WORKER = """
import sys
from forwarder import metrics
metrics.upstream_healthy.labels("up", "192.0.2.53:53").set(float(sys.argv[1]))
metrics.inflight.inc(float(sys.argv[2]))
metrics.queries.labels("udp", "default", "A").inc(float(sys.argv[2]))
print(__import__("os").getpid())
"""

SCRAPE = """
import sys
from prometheus_client import generate_latest, multiprocess
from forwarder import metrics
assert metrics.MULTIPROCESS
for pid in sys.argv[1:]:
    multiprocess.mark_process_dead(int(pid))
sys.stdout.write(generate_latest(metrics.exposition_registry()).decode())
"""


def _run(code: str, directory: str, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_exposition_merges_workers_under_the_same_names(tmp_path: Path) -> None:
    """Two workers' files merged: counters and in-flight summed, health the minimum (one
    worker sees the server down: 0), build info a gauge with the same name and labels; the
    families keep the names and types of single-process mode."""
    first = _run(WORKER, str(tmp_path), "1", "2").strip()
    _run(WORKER, str(tmp_path), "0", "3")
    families = {f.name: f for f in text_string_to_metric_families(_run(SCRAPE, str(tmp_path)))}
    single = exposition()
    for name, family in families.items():
        exposed = name + "_total" if family.type == "counter" else name
        assert single.get(exposed) == family.type, name
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in families.values() for s in f.samples}
    assert values[("forwarder_queries_total",
                   (("protocol", "udp"), ("qtype", "A"), ("rule", "default")))] == 5
    assert values[("forwarder_inflight_queries", ())] == 5
    assert values[("forwarder_upstream_healthy", (("group", "up"),
                                                  ("server", "192.0.2.53:53")))] == 0
    (build,) = families["forwarder_build_info"].samples
    assert build.name == "forwarder_build_info" and set(build.labels) == {"version", "python"}
    assert build.value == 1.0

    # the first worker is gone: its live gauges go, its counts stay
    families = {f.name: f for f in text_string_to_metric_families(
        _run(SCRAPE, str(tmp_path), first))}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in families.values() for s in f.samples}
    assert values[("forwarder_inflight_queries", ())] == 3
    assert values[("forwarder_queries_total",
                   (("protocol", "udp"), ("qtype", "A"), ("rule", "default")))] == 5
