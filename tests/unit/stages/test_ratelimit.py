"""Rate limiting: token buckets per client prefix, drop or REFUSED, bounded bucket table."""

from __future__ import annotations

from typing import Any

import dns.message
import pytest

from forwarder import config as config_mod
from forwarder import metrics, runtime
from forwarder.config import model
from forwarder.dns import wire
from forwarder.query import DROP, Query
from forwarder.stages.ratelimit import RateLimiter, build
from tests.conftest import forwarder_config


def settings(**rate_limit: Any) -> model.RateLimit:
    data = forwarder_config({"g": ["127.0.0.1:53"]}, rate_limit=rate_limit)
    return config_mod.from_data(data, "<test>").rate_limit


QUERY_WIRE = dns.message.make_query("www.example.com", "A").to_wire()  # built once: it is slow


def query(client: str, now: float) -> Query:
    return Query.from_wire(QUERY_WIRE, (client, 5300), "udp", now)


def allowed(limiter: RateLimiter, client: str, now: float, n: int) -> int:
    return sum(limiter.check(query(client, now)) is None for _ in range(n))


def dropped() -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_rate_limited_total",
                                             {"action": "drop"}) or 0.0


def test_burst_then_drop_then_refill_at_qps() -> None:
    """Rate limit: qps 10, burst 5: 5 queries pass at once, the 6th is dropped; 0.25 s later
    2.5 tokens have come back: 2 more pass."""
    limiter = RateLimiter(settings(qps=10, burst=5))
    before = dropped()
    assert allowed(limiter, "192.0.2.1", 100.0, 5) == 5
    assert limiter.check(query("192.0.2.1", 100.0)) is DROP
    assert dropped() == before + 1
    assert allowed(limiter, "192.0.2.1", 100.25, 5) == 2


def test_refill_is_capped_at_burst() -> None:
    limiter = RateLimiter(settings(qps=10, burst=5))
    assert allowed(limiter, "192.0.2.1", 100.0, 5) == 5
    assert allowed(limiter, "192.0.2.1", 1000.0, 10) == 5


def test_refuse_action_answers_refused() -> None:
    limiter = RateLimiter(settings(qps=1, burst=1, action="refuse"))
    assert limiter.check(query("192.0.2.1", 0.0)) is None
    q = query("192.0.2.1", 0.0)
    reply = limiter.check(q)
    assert reply is not None and reply is not DROP
    assert reply.rcode == wire.Rcode.REFUSED and reply.answered_by == "ratelimit"
    assert dns.message.from_wire(reply.to_client(q)).id == q.id


@pytest.mark.parametrize(("first", "second", "shared"), [
    ("192.0.2.1", "192.0.2.2", False),  # /32: one bucket per IPv4 address
    ("2001:db8:0:1::1", "2001:db8:0:ff::2", True),  # same /56
    ("2001:db8:0:100::1", "2001:db8:0:1::1", False),  # another /56
    ("::ffff:192.0.2.1", "192.0.2.1", True),  # IPv4-mapped counts as IPv4
])
def test_buckets_are_per_prefix(first: str, second: str, shared: bool) -> None:
    limiter = RateLimiter(settings(qps=1, burst=2))
    assert allowed(limiter, first, 0.0, 2) == 2
    assert (limiter.check(query(second, 0.0)) is None) is not shared


def test_ipv4_prefix_setting_groups_a_network() -> None:
    limiter = RateLimiter(settings(qps=1, burst=2, ipv4_prefix=24))
    assert allowed(limiter, "192.0.2.1", 0.0, 2) == 2
    assert limiter.check(query("192.0.2.77", 0.0)) is DROP
    assert limiter.check(query("192.0.3.1", 0.0)) is None


def test_bucket_table_stays_bounded_under_many_clients() -> None:
    """Rate limit: 5,000 distinct clients against a 1,000-bucket table: never more than
    1,000 buckets; a client seen recently keeps its (empty) bucket."""
    limiter = RateLimiter(settings(qps=0.001, burst=1), max_buckets=1000)
    for i in range(5000):
        limiter.check(query(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", float(i)))
        assert len(limiter) <= 1000
    last = "10.0.19.135"  # client 4999
    assert limiter.check(query(last, 4999.5)) is DROP


def test_idle_buckets_are_swept_first() -> None:
    limiter = RateLimiter(settings(qps=1, burst=1), max_buckets=4)
    limiter.check(query("192.0.2.1", 0.0))
    for i in range(2, 5):
        limiter.check(query(f"192.0.2.{i}", 10.0))
    limiter.check(query("192.0.2.9", 10.5))  # table full: the idle 192.0.2.1 goes
    assert limiter.check(query("192.0.2.4", 10.5)) is DROP  # still tracked: no fresh burst


def test_build_off_when_qps_zero_and_keeps_buckets_across_reload() -> None:
    base = forwarder_config({"g": ["127.0.0.1:53"]})
    off = runtime.build(config_mod.from_data(base, "<test>"))
    assert off.rate_limiter is None
    on_cfg = config_mod.from_data({**base, "rate_limit": {"qps": 5}}, "<test>")
    on = runtime.build(on_cfg)
    assert isinstance(on.rate_limiter, RateLimiter)
    again = runtime.build(config_mod.from_data({**base, "rate_limit": {"qps": 5},
                                                "acl": {"allow": ["127.0.0.0/8"]}}, "<t>"),
                          previous=on)
    assert again.rate_limiter is on.rate_limiter
    changed = runtime.build(config_mod.from_data({**base, "rate_limit": {"qps": 6}}, "<t>"),
                            previous=on)
    assert changed.rate_limiter is not on.rate_limiter
    assert isinstance(build(on_cfg, None), RateLimiter)
