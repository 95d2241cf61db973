"""Per-client rate limiting: a token bucket per client prefix (/32 for IPv4 and /56 for IPv6
by default; IPv4-mapped IPv6 addresses count as IPv4).

A bucket holds up to `burst` tokens and refills at `qps` tokens a second; each query takes
one. A query that finds the bucket empty is dropped (`action: drop`, the default: no answer
to amplify) or answered REFUSED (`action: refuse`), and counted in
forwarder_rate_limited_total{action}. The bucket table is bounded: when it is full, buckets
that have refilled (idle clients: the same as no bucket) are swept, then the oldest ones.
"""

from __future__ import annotations

import ipaddress

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import wire
from forwarder.query import DROP, Query, Reply, error_reply

MAX_BUCKETS = 100_000
_DROP, _REFUSE = ("drop",), ("refuse",)  # the forwarder_rate_limited_total action labels
_PREFIX_MEMO_LIMIT = 65_536


class RateLimiter:
    """Token buckets by client prefix; `check` is called for every query before anything else
    is done for it."""

    __slots__ = ("_buckets", "_burst", "_drop", "_limit", "_prefixes", "_qps", "_settings")

    sees_every_query = True  # each query spends a token

    def __init__(self, settings: model.RateLimit, max_buckets: int = MAX_BUCKETS) -> None:
        self._settings = settings
        self._qps = settings.qps
        self._burst = float(settings.burst)
        self._drop = settings.action != "refuse"
        self._limit = max_buckets
        self._buckets: dict[str, list[float]] = {}  # prefix -> [tokens, last refill time]
        self._prefixes: dict[str, str] = {}  # client address -> its prefix

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, q: Query) -> Reply | None:
        """Answers None when *q* is within its client's limit, else query.DROP or a
        REFUSED reply. Uses the query's arrival time as the clock."""
        host = q.client[0]
        prefix = self._prefixes.get(host)
        if prefix is None:
            prefix = self._prefix(host)
        now = q.received
        bucket = self._buckets.get(prefix)
        if bucket is None:
            if len(self._buckets) >= self._limit:
                self._sweep(now)
            self._buckets[prefix] = [self._burst - 1.0, now]
            return None
        tokens = bucket[0] + (now - bucket[1]) * self._qps
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return self._limited(q)

    def _limited(self, q: Query) -> Reply:
        if self._drop:
            metrics.rate_limited_counts.inc(_DROP)
            return DROP
        metrics.rate_limited_counts.inc(_REFUSE)
        return error_reply(q, wire.Rcode.REFUSED, wire.Ede.OTHER,
                           "rate limit exceeded for this client", by="ratelimit")

    def _prefix(self, host: str) -> str:
        """Answers the network a client address belongs to, as text (the bucket's key)."""
        s = self._settings
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            prefix = host
        else:
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if addr.version == 4:
                bits = s.ipv4_prefix
                prefix = str(addr) if bits == 32 else str(
                    ipaddress.ip_network((addr, bits), strict=False))
            else:
                prefix = str(ipaddress.ip_network((addr, s.ipv6_prefix), strict=False))
        if len(self._prefixes) >= _PREFIX_MEMO_LIMIT:
            self._prefixes.clear()
        self._prefixes[host] = prefix
        return prefix

    def _sweep(self, now: float) -> None:
        """Makes room: drops buckets that have refilled, then the oldest until half full."""
        full_after = self._burst / self._qps if self._qps > 0 else float("inf")
        buckets = {k: b for k, b in self._buckets.items() if now - b[1] < full_after}
        keep = self._limit // 2
        if len(buckets) > keep:
            # dicts keep insertion order: the first keys are the clients seen longest ago
            buckets = dict(list(buckets.items())[len(buckets) - keep:])
        self._buckets = buckets


def build(cfg: model.Config, previous: RateLimiter | None) -> RateLimiter | None:
    """The rate limiter for *cfg* (None when `rate_limit.qps` is 0). Buckets carry over a
    reload that keeps the same settings (*previous*), so a reload does not reset anyone's
    limit."""
    settings = cfg.rate_limit
    if settings.qps <= 0:
        return None
    if previous is not None and previous._settings == settings:
        return previous
    return RateLimiter(settings)
