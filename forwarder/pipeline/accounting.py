"""Accounting: each answered query counted once (queries, responses by rcode, latency),
in plain counts folded into the Prometheus metrics on collection."""

from __future__ import annotations

from forwarder import metrics
from forwarder.query import Query, Reply


class Accounting:
    """Counts each answered query once: queries, responses by rcode, and latency.

    Counts go into plain dicts on the query path and are folded into the Prometheus
    metrics whenever the registry is collected (metrics.PENDING), so answering a query costs
    a dict update instead of three locked metric updates.
    """

    __slots__ = ("__weakref__", "_counts", "_dropped", "_latency")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, int], int] = {}
        self._dropped: dict[tuple[str, str, str], int] = {}  # queries that got no response
        self._latency: dict[tuple[str, str], metrics.HistogramCounts] = {}
        metrics.PENDING.flushers.add(self)

    def record(self, q: Query, reply: Reply, now: float) -> None:
        rule = q.rule.name if q.rule is not None else "none"
        self.count(q.transport, rule, q.qtype, reply.rcode, now - q.received)
        rt = q.runtime
        if rt is not None and rt.querylog is not None:
            rt.querylog.record(q, reply, now)

    def count(self, transport: str, rule: str, qtype: int, rcode: int, seconds: float,
              n: int = 1) -> None:
        """Counts *n* answered queries that took *seconds* each."""
        key = (transport, rule, metrics.qtype_label(qtype), rcode)
        counts = self._counts
        counts[key] = counts.get(key, 0) + n
        latency = self._latency.get((transport, rule))
        if latency is None:
            latency = self._latency[(transport, rule)] = metrics.HistogramCounts(
                metrics.request_duration.labels(transport, rule))
        latency.observe(seconds, n)

    def flush(self) -> None:
        """Folds the counts kept since the last flush into the Prometheus metrics."""
        counts, self._counts = self._counts, {}
        for (transport, rule, qtype, rcode), n in counts.items():
            metrics.queries.labels(transport, rule, qtype).inc(n)
            metrics.responses.labels(transport, rule, metrics.rcode_label(rcode)).inc(n)
        dropped, self._dropped = self._dropped, {}
        for labels, n in dropped.items():
            metrics.queries.labels(*labels).inc(n)
        for latency in self._latency.values():
            latency.flush()

    def dropped(self, q: Query) -> None:
        """Counts a query that gets no response at all (a rate limit or hook verdict)."""
        rule = q.rule.name if q.rule is not None else "none"
        key = (q.transport, rule, metrics.qtype_label(q.qtype))
        self._dropped[key] = self._dropped.get(key, 0) + 1
