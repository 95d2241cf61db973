"""Every Prometheus metric the forwarder exports, declared in one place.

Names follow Prometheus conventions: `forwarder_` prefix, base units, `_total` counters,
`_seconds` histograms. Labels have bounded cardinality: rule, group, server and policy
names come from the configuration; query types are folded to a fixed set; never a query
name or a client address.

Multiprocess mode (`workers:` above 1): the supervisor points PROMETHEUS_MULTIPROC_DIR at a
private directory before prometheus_client is first imported, so every worker keeps its
values in its own memory-mapped files. Each worker folds its pending counts into them every
second; worker 0 serves /metrics from `exposition_registry()`, which merges every worker's
files. Gauges say how they merge (`multiprocess_mode`): sums for what each worker holds
(in-flight queries, TCP connections, cache entries), the minimum for health (1 only while
every worker sees the server up or the canary passing), the maximum for the last reload time.
"""

from __future__ import annotations

import bisect
import platform
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, values
from prometheus_client.registry import Collector

from forwarder import __version__

# no `_created` series: they double the exposition for a timestamp Prometheus does not need
from forwarder.dns import wire

prometheus_client.disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

# what prometheus_client chose when it was imported: mmap files per process, or plain values
MULTIPROCESS: bool = getattr(values.ValueClass, "_multiprocess", False)
if MULTIPROCESS:
    # the files cannot forget a series: one a reload drops stays in /metrics (documented)
    warnings.filterwarnings("ignore", message="Removal of labels has not been implemented",
                            category=UserWarning)


class _PendingCounts(Collector):
    """Folds counts kept in plain dicts on the query path into the metrics below whenever
    the registry is collected. Registered first, so the folding happens before any metric
    is read."""

    def __init__(self) -> None:
        self.flushers: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterable[Any]:
        self.flush()
        return ()

    def flush(self) -> None:
        """Folds every owner's pending counts into the metrics now."""
        for owner in list(self.flushers):
            owner.flush()


PENDING = _PendingCounts()
REGISTRY.register(PENDING)

# 0.25 ms .. ~8 s, as CoreDNS's plugin.TimeBuckets
TIME_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
                0.256, 0.512, 1.024, 2.048, 4.096, 8.192)

FOLDED_QTYPES = frozenset({"A", "AAAA", "CNAME", "HTTPS", "SVCB", "MX", "TXT", "PTR", "SRV",
                           "NS", "SOA", "DS", "DNSKEY", "ANY", "CAA"})
FOLDED_RCODES = frozenset({"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
                           "BADVERS"})


def qtype_label(qtype: int) -> str:
    name = wire.QTYPE_NAMES.get(qtype)
    return name if name in FOLDED_QTYPES else "other"


def rcode_label(rcode: int) -> str:
    name = wire.RCODE_NAMES.get(rcode)
    return name if name in FOLDED_RCODES else "other"


# --- queries and responses -------------------------------------------------------------------
queries = Counter("forwarder_queries_total", "Queries received, by protocol, rule and type.",
                  ["protocol", "rule", "qtype"], registry=REGISTRY)
responses = Counter("forwarder_responses_total", "Responses sent, by protocol, rule and rcode.",
                    ["protocol", "rule", "rcode"], registry=REGISTRY)
request_duration = Histogram("forwarder_request_duration_seconds",
                             "Time from receiving a query to sending its response.",
                             ["protocol", "rule"], buckets=TIME_BUCKETS, registry=REGISTRY)
acl_refused = Counter("forwarder_acl_refused_total",
                      "Queries refused because the client is not in acl.allow.", registry=REGISTRY)
rate_limited = Counter("forwarder_rate_limited_total",
                       "Queries over a client's rate limit, by what was done (drop, refuse).",
                       ["action"], registry=REGISTRY)
malformed = Counter("forwarder_malformed_total",
                    "Client messages dropped or answered FORMERR/NOTIMP, by kind.",
                    ["kind"], registry=REGISTRY)
dropped = Counter("forwarder_dropped_total",
                  "Responses or queries dropped by the server, by reason.", ["reason"],
                  registry=REGISTRY)
internal_errors = Counter("forwarder_internal_errors_total",
                          "Queries answered SERVFAIL because of an internal error.",
                          registry=REGISTRY)
inflight = Gauge("forwarder_inflight_queries",
                 "Queries waiting on an upstream, hook or policy lookup.", registry=REGISTRY,
                 multiprocess_mode="livesum")
tcp_connections = Gauge("forwarder_tcp_connections", "Open client TCP connections.",
                        registry=REGISTRY, multiprocess_mode="livesum")

# --- upstreams ------------------------------------------------------------------------------
upstream_queries = Counter("forwarder_upstream_queries_total",
                           "Queries sent to upstream servers.",
                           ["group", "server", "transport"], registry=REGISTRY)
upstream_errors = Counter("forwarder_upstream_errors_total",
                          "Failed or rejected upstream exchanges, by kind (timeout, refused, "
                          "servfail, mismatch, tcp, truncated, network, malformed; over tls "
                          "and https also certificate, pin, handshake, handshake_timeout, "
                          "http_status, http, connection).",
                          ["group", "server", "kind"], registry=REGISTRY)
upstream_connections = Counter("forwarder_upstream_connections_total",
                               "Connections to encrypted (tls, https) upstreams, by event: opened, "
                               "reused (a query sent on a connection already open), failed "
                               "(connecting or the TLS handshake failed).",
                               ["group", "server", "transport", "event"], registry=REGISTRY)
upstream_handshake_duration = Histogram("forwarder_upstream_handshake_duration_seconds",
                                        "Time to connect to an encrypted upstream and complete "
                                        "the TLS handshake.", ["group", "server", "transport"],
                                        buckets=TIME_BUCKETS, registry=REGISTRY)
upstream_duration = Histogram("forwarder_upstream_duration_seconds",
                              "Round-trip time of answered upstream queries.",
                              ["group", "server"], buckets=TIME_BUCKETS, registry=REGISTRY)
upstream_healthy = Gauge("forwarder_upstream_healthy",
                         "1 if the upstream server is considered up, else 0.",
                         ["group", "server"], registry=REGISTRY, multiprocess_mode="livemin")
upstream_canary_ok = Gauge("forwarder_upstream_canary_ok",
                           "1 if the group's canary name resolves to allowed addresses, else 0.",
                           ["group"], registry=REGISTRY, multiprocess_mode="livemin")
upstream_health_checks = Counter("forwarder_upstream_health_checks_total",
                                 "Active health-check probes sent, by result (success, failure).",
                                 ["group", "server", "result"], registry=REGISTRY)

# --- policy and hooks -------------------------------------------------------------------------
policy_verdicts = Counter("forwarder_policy_verdicts_total",
                          "Answer-policy verdicts, by policy, rule, action, mode and where "
                          "the protected name was found (qname or chain).",
                          ["policy", "rule", "action", "mode", "where"], registry=REGISTRY)
hook_trusted = Counter("forwarder_hook_trusted_answers_total",
                       "Hook answers marked trusted=True, which no answer policy judges.",
                       ["hook"], registry=REGISTRY)
hook_errors = Counter("forwarder_hook_errors_total",
                      "Hook calls that raised, timed out or returned an invalid verdict.",
                      ["hook", "kind"], registry=REGISTRY)

# --- cache ---------------------------------------------------------------------------------
cache_hits = Counter("forwarder_cache_hits_total", "Queries answered from the cache.",
                     registry=REGISTRY)
cache_misses = Counter("forwarder_cache_misses_total", "Cache lookups that found nothing fresh.",
                       registry=REGISTRY)
cache_stale = Counter("forwarder_cache_stale_served_total",
                      "Expired answers served because upstreams failed (RFC 8767).",
                      registry=REGISTRY)
cache_entries = Gauge("forwarder_cache_entries", "Entries in the cache.", registry=REGISTRY,
                      multiprocess_mode="livesum")
cache_evictions = Counter("forwarder_cache_evictions_total",
                          "Entries evicted to stay within cache.max_entries.", registry=REGISTRY)
cache_coalesced = Counter("forwarder_cache_coalesced_total",
                          "Queries that waited on an identical query already in flight.",
                          registry=REGISTRY)

# --- operations -----------------------------------------------------------------------------
config_reloads = Counter("forwarder_config_reloads_total", "Configuration reloads, by result.",
                         ["result"], registry=REGISTRY)
config_last_reload_success = Gauge("forwarder_config_last_reload_success_timestamp_seconds",
                                   "Unix time of the last successful configuration load.",
                                   registry=REGISTRY, multiprocess_mode="livemax")
config_last_reload_ok = Gauge("forwarder_config_last_reload_successful",
                              "1 if the last configuration load succeeded, 0 if it was rejected "
                              "(the running configuration is older than the file).",
                              registry=REGISTRY, multiprocess_mode="livemin")
querylog_dropped = Counter("forwarder_querylog_dropped_total",
                           "Query log lines dropped because the log queue was full.",
                           registry=REGISTRY)

# --- AWS discovery (the `aws:` section) -----------------------------------------------------
aws_inventory_age = Gauge("forwarder_aws_inventory_age_seconds",
                          "Seconds since the AWS inventory in use was read from the API.",
                          registry=REGISTRY, multiprocess_mode="livemax")
aws_refreshes = Counter("forwarder_aws_refreshes_total",
                        "Reads of the AWS inventory from the API, by result (success, failure).",
                        ["result"], registry=REGISTRY)
aws_endpoints = Gauge("forwarder_aws_endpoints",
                      "Endpoints in the AWS inventory in use, by kind (interface, gateway, "
                      "inbound).", ["kind"], registry=REGISTRY, multiprocess_mode="livemax")

build_info: Info | Gauge
if MULTIPROCESS:  # the files hold no Info: the same series as a gauge set to 1
    build_info = Gauge("forwarder_build_info", "Version of the forwarder and of Python.",
                       ["version", "python"], registry=REGISTRY, multiprocess_mode="livemax")
    build_info.labels(__version__, platform.python_version()).set(1)
else:
    build_info = Info("forwarder_build", "Version of the forwarder and of Python.",
                      registry=REGISTRY)
    build_info.info({"version": __version__, "python": platform.python_version()})

_EXPOSED = REGISTRY
if MULTIPROCESS:
    # built now, while the process may still read everything: workers drop privileges later
    from prometheus_client import multiprocess

    _EXPOSED = CollectorRegistry()
    _EXPOSED.register(PENDING)
    multiprocess.MultiProcessCollector(_EXPOSED)


def exposition_registry() -> CollectorRegistry:
    """The registry /metrics serves: REGISTRY, or in multiprocess mode one that first folds
    this process's pending counts and then merges every worker's files."""
    return _EXPOSED


def observe_many(child: Any, buckets: list[int], total: float) -> None:
    """Adds a batch of observations to a histogram child: *buckets* holds the count per
    bucket (the last one is +Inf), *total* their sum. Uses prometheus_client's value
    objects; falls back to one observe() per count if they are not there."""
    values = getattr(child, "_buckets", None)
    summed = getattr(child, "_sum", None)
    if values is None or summed is None or len(values) != len(buckets):
        n = sum(buckets)
        for _ in range(n):
            child.observe(total / n)
        return
    for value, count in zip(values, buckets, strict=True):
        if count:
            value.inc(count)
    summed.inc(total)


class HistogramCounts:
    """Observations for one histogram child, kept as plain counts on the query path and
    added to the child by `flush` (an owner's flush, on collection): an observe() takes a
    lock and walks the buckets, this is one bisect and two additions."""

    __slots__ = ("buckets", "child", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.buckets = [0] * (len(TIME_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float, n: int = 1) -> None:
        """Counts *n* observations of *seconds* each."""
        self.buckets[bisect.bisect_left(TIME_BUCKETS, seconds)] += n
        self.total += seconds * n

    def flush(self) -> None:
        if self.total or any(self.buckets):
            buckets, total = self.buckets, self.total
            self.buckets, self.total = [0] * len(buckets), 0.0
            observe_many(self.child, buckets, total)


class CounterCounts:
    """Increments of one labelled counter kept as plain counts on the query path and added
    to it on collection. Held by this module, so counts outlive the objects that made
    them (a policy a reload replaced)."""

    __slots__ = ("__weakref__", "counter", "counts")

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.counts: dict[tuple[str, ...], int] = {}
        PENDING.flushers.add(self)

    def inc(self, labels: tuple[str, ...]) -> None:
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for labels, n in counts.items():
            self.counter.labels(*labels).inc(n)


policy_verdict_counts = CounterCounts(policy_verdicts)
rate_limited_counts = CounterCounts(rate_limited)  # a flood is counted without a lock each
