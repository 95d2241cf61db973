"""Rate limiting and bounds end to end: a client over its token bucket is dropped or refused
(and counted); past limits.max_inflight upstream queries, SERVFAIL comes at once."""

from __future__ import annotations

import asyncio
import time

import dns.edns
import dns.exception
import dns.message
import dns.rcode
import pytest

from forwarder import metrics
from tests.conftest import forwarder_config, query, running
from tests.fakes import Delay, FakeUpstream, reply


def limited(action: str) -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_rate_limited_total",
                                             {"action": action}) or 0.0


async def test_over_the_limit_is_refused(upstream: FakeUpstream, transport: str) -> None:
    """Rate limit: burst 3 at 0.01 qps with action refuse: three answers, then REFUSED, and
    the refusal is counted; the upstream never sees the refused query."""
    cfg = forwarder_config({"up": [upstream.addr]},
                           rate_limit={"qps": 0.01, "burst": 3, "action": "refuse"})
    before = limited("refuse")
    async with running(cfg) as srv:
        answers = [await query(srv, transport, f"n{i}.example.com") for i in range(4)]
    assert [a.rcode() for a in answers] == [dns.rcode.NOERROR] * 3 + [dns.rcode.REFUSED]
    assert len(upstream.received) == 3
    assert limited("refuse") == before + 1


async def test_over_the_limit_is_dropped_by_default(upstream: FakeUpstream,
                                                    transport: str) -> None:
    """Rate limit: burst 2 and the default action: the third query gets no answer at all."""
    cfg = forwarder_config({"up": [upstream.addr]}, rate_limit={"qps": 0.01, "burst": 2})
    before = limited("drop")
    async with running(cfg) as srv:
        for i in range(2):
            assert (await query(srv, transport, f"n{i}.example.com")).rcode() == 0
        with pytest.raises(dns.exception.Timeout):
            await query(srv, transport, "n3.example.com", timeout=0.3)
    assert limited("drop") == before + 1
    assert len(upstream.received) == 2


async def test_limit_applies_to_cache_hits(upstream: FakeUpstream) -> None:
    """Rate limit: answers from the cache count against the bucket too."""
    cfg = forwarder_config({"up": [upstream.addr]},
                           rate_limit={"qps": 0.01, "burst": 2, "action": "refuse"})
    async with running(cfg) as srv:
        codes = [(await query(srv, "udp", "www.example.com")).rcode() for _ in range(3)]
    assert codes == [dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.REFUSED]
    assert len(upstream.received) == 1


async def test_no_limit_by_default(upstream: FakeUpstream) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        assert srv.runtime.rate_limiter is None
        answers = await asyncio.gather(*(query(srv, "udp", f"n{i}.example.com")
                                         for i in range(30)))
    assert all(a.rcode() == dns.rcode.NOERROR for a in answers)


async def test_inflight_cap_answers_servfail_at_once(upstream: FakeUpstream,
                                                     transport: str) -> None:
    """Bounds: limits.max_inflight 2 and an upstream taking 0.25 s: of five different names
    asked together, two are answered, three get SERVFAIL (EDE: overloaded) without waiting
    on the upstream; once the two are done, queries go through again."""
    upstream.handler = lambda rx: Delay(0.25, reply(rx.message, "A 192.0.2.1"))
    cfg = forwarder_config({"up": [upstream.addr]}, limits={"max_inflight": 2})
    cfg["upstreams"]["up"].update(timeout=1.0)
    async with running(cfg) as srv:

        async def timed(name: str) -> tuple[dns.message.Message, float]:
            started = time.monotonic()
            msg = await query(srv, transport, name, use_edns=0)
            return msg, time.monotonic() - started

        results = await asyncio.gather(*(timed(f"n{i}.example.com") for i in range(5)))
        after = await query(srv, transport, "later.example.com")
    rcodes = sorted(msg.rcode() for msg, _ in results)
    assert rcodes == [dns.rcode.NOERROR] * 2 + [dns.rcode.SERVFAIL] * 3
    for msg, took in results:
        if msg.rcode() == dns.rcode.SERVFAIL:
            assert took < 0.2
            texts = [o.text for o in msg.options if o.otype == dns.edns.EDE]
            assert any("overloaded" in (t or "") for t in texts)
    assert after.rcode() == dns.rcode.NOERROR
    assert len(upstream.received) == 3


async def test_refusals_to_clients_outside_the_acl_are_rate_limited(
        upstream: FakeUpstream, transport: str) -> None:
    """A client the ACL does not allow gets REFUSED only within its rate limit; past it,
    nothing (REFUSED answers to spoofed sources would otherwise flow at line rate)."""
    cfg = forwarder_config({"up": [upstream.addr]}, acl={"allow": ["10.0.0.0/8"]},
                           rate_limit={"qps": 0.01, "burst": 2})
    before = limited("drop")
    async with running(cfg) as srv:
        for i in range(2):
            assert (await query(srv, transport, f"n{i}.example.com")).rcode() == \
                dns.rcode.REFUSED
        with pytest.raises(dns.exception.Timeout):
            await query(srv, transport, "n3.example.com", timeout=0.3)
    assert limited("drop") == before + 1
    assert upstream.received == []
