"""Cache end to end: hits over UDP and TCP, the client's case and buffer on a hit, DO/CD,
negative answers, answers after policy, serve-stale with a dead or slow upstream, and
coalescing of identical queries.

Expiry is driven by moving the running cache's clock forward, never by waiting.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from forwarder import metrics
from forwarder.dns import wire
from forwarder.query import Query, Reply
from forwarder.server import Server
from forwarder.stages.cache import Cache
from tests.conftest import forwarder_config, query, running
from tests.fakes import Delay, FakeUpstream, Received, reply

SOA = "example.com. SOA ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 60"


def ede_of(msg: dns.message.Message) -> list[int]:
    return [o.code for o in msg.options if o.otype == dns.edns.EDE]


def addresses(msg: dns.message.Message) -> list[str]:
    return [rr.address for rrset in msg.answer for rr in rrset if hasattr(rr, "address")]


def cache_of(srv: Server) -> Cache:
    cache = srv.runtime.cache
    assert isinstance(cache, Cache)
    return cache


def skip_ahead(srv: Server, seconds: float) -> None:
    """Moves the running cache's clock *seconds* into the future."""
    cache = cache_of(srv)
    base = cache.clock
    cache.clock = lambda: base() + seconds


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


async def test_second_query_is_answered_from_cache(upstream: FakeUpstream,
                                                   transport: str) -> None:
    """Cache: ask A www.example.com twice; the upstream sees one query, the client gets the
    same answer both times with its own ID."""
    hits = sample("forwarder_cache_hits_total")
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        first = await query(srv, transport, "www.example.com")
        second = await query(srv, transport, "www.example.com")
    assert len(upstream.received) == 1
    assert addresses(first) == addresses(second) == ["192.0.2.1"]
    assert 299 <= second.answer[0].ttl <= 300
    assert sample("forwarder_cache_hits_total") == hits + 1


async def test_hit_keeps_client_case(upstream: FakeUpstream, transport: str) -> None:
    """Cache: the first client asks www.example.com, the second WwW.eXaMpLe.CoM (0x20): the
    hit carries the second client's question and owner case."""
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        await query(srv, transport, "www.example.com")
        mixed = await query(srv, transport, "WwW.eXaMpLe.CoM")
    assert len(upstream.received) == 1
    assert mixed.question[0].name.to_text() == "WwW.eXaMpLe.CoM."
    assert mixed.answer[0].name.to_text() == "WwW.eXaMpLe.CoM."


async def test_hit_honours_client_udp_buffer(upstream: FakeUpstream) -> None:
    """Cache: a 40-record answer cached via TCP is truncated (TC) for a UDP client without
    EDNS and sent whole to one with a 4096-byte buffer."""
    records = [f"A 192.0.2.{i}" for i in range(1, 41)]
    upstream.handler = lambda rx: reply(rx.message, *records)
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        whole = await query(srv, "tcp", "big.example.com")
        small = await query(srv, "udp", "big.example.com")
        large = await query(srv, "udp", "big.example.com", use_edns=0, payload=4096)
    assert len(upstream.received) == 1
    assert len(addresses(whole)) == 40
    assert small.flags & dns.flags.TC and not small.answer
    assert len(addresses(large)) == 40 and not large.flags & dns.flags.TC


async def test_do_and_cd_get_their_own_entries(upstream: FakeUpstream, transport: str) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        await query(srv, transport, "www.example.com")
        await query(srv, transport, "www.example.com", want_dnssec=True)
        cd = dns.message.make_query("www.example.com", "A")
        cd.flags |= dns.flags.CD
        host, port = srv.address(transport)
        ask = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
        await ask(cd, host, port=port, timeout=3)
        await query(srv, transport, "www.example.com", want_dnssec=True)
    flags = [(bool(rx.message.ednsflags & dns.flags.DO), bool(rx.message.flags & dns.flags.CD))
             for rx in upstream.received]
    assert flags == [(False, False), (True, False), (False, True)]


async def test_nxdomain_is_cached_with_soa_minimum(upstream: FakeUpstream,
                                                   transport: str) -> None:
    """Negative caching: NXDOMAIN with SOA MINIMUM 60 (TTL 300): the second ask is a hit and
    the SOA's TTL is at most 60."""
    upstream.handler = lambda rx: reply(rx.message, rcode=dns.rcode.NXDOMAIN, authority=[SOA])
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        await query(srv, transport, "nope.example.com")
        second = await query(srv, transport, "nope.example.com")
    assert len(upstream.received) == 1
    assert second.rcode() == dns.rcode.NXDOMAIN
    assert second.authority[0].ttl <= 60


async def test_cache_disabled_asks_upstream_every_time(upstream: FakeUpstream) -> None:
    cfg = forwarder_config({"up": [upstream.addr]}, cache={"enabled": False})
    async with running(cfg) as srv:
        assert srv.runtime.cache is None
        for _ in range(2):
            await query(srv, "udp", "www.example.com")
    assert len(upstream.received) == 2


class RewriteToPrivate:
    """Stands in for an answer policy: answers 10.0.1.15 with EDE 4, as `rewrite` does."""

    def __init__(self) -> None:
        self.calls = 0

    def decide(self, q: Query, upstream_reply: Reply, group: str) -> object:
        return ("violation", upstream_reply)  # anything but a Reply: enforce() decides

    async def enforce(self, q: Query, violation: object, group: object, rt: object) -> Reply:
        self.calls += 1
        record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + socket.inet_aton("10.0.1.15")
        data = wire.synth_reply(q.flags, q.question, 0, answers=record, ancount=1)
        return Reply(data, 0, "policy", ((int(wire.Ede.FORGED_ANSWER), "rewritten by p"),))


async def test_answer_after_policy_is_what_the_cache_serves(upstream: FakeUpstream,
                                                            transport: str) -> None:
    """Cache after policy: the upstream answers 52.219.1.1, the policy rewrites it to
    10.0.1.15 with EDE 4; the second ask is a hit with the rewritten answer and the EDE,
    and neither the upstream nor the policy runs again."""
    upstream.handler = lambda rx: reply(rx.message, "A 52.219.1.1")
    cfg = forwarder_config({"up": [upstream.addr]},
                           zones=[{"match": ".", "upstream": "up", "policy": "p"}],
                           policies={"p": {"on_violation": "servfail"}})
    async with running(cfg) as srv:
        policy = RewriteToPrivate()
        srv.runtime.policies["p"] = policy
        answers = [await query(srv, transport, "s3.ap-northeast-1.amazonaws.com", use_edns=0)
                   for _ in range(2)]
    assert len(upstream.received) == 1 and policy.calls == 1
    for msg in answers:
        assert addresses(msg) == ["10.0.1.15"]
        assert ede_of(msg) == [wire.Ede.FORGED_ANSWER]


async def test_dead_upstream_gets_stale_answer(upstream: FakeUpstream, transport: str) -> None:
    """Serve-stale: an answer cached with TTL 60 expires; every upstream then times out; the
    client gets the old answer with TTL 30 and EDE 3 instead of SERVFAIL."""
    upstream.handler = lambda rx: reply(rx.message, "A 192.0.2.1", ttl=60)
    cfg = forwarder_config({"up": [upstream.addr]}, cache={"stale_client_timeout": 5})
    stale_served = sample("forwarder_cache_stale_served_total")
    async with running(cfg) as srv:
        await query(srv, transport, "www.example.com")
        skip_ahead(srv, 120)
        upstream.handler = lambda rx: None
        stale = await query(srv, transport, "www.example.com", use_edns=0)
        again = await query(srv, transport, "www.example.com", use_edns=0)
        asked = len(upstream.received)
    assert stale.rcode() == dns.rcode.NOERROR
    assert addresses(stale) == ["192.0.2.1"]
    assert stale.answer[0].ttl == 30
    assert ede_of(stale) == [wire.Ede.STALE_ANSWER]
    # after a failed refresh the stale answer comes at once, without asking upstreams
    assert ede_of(again) == [wire.Ede.STALE_ANSWER]
    assert asked == 1 + 2  # the first answer, then the refresh's two tries
    assert sample("forwarder_cache_stale_served_total") == stale_served + 2


async def test_no_stale_answer_means_servfail(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: None
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "www.example.com")
    assert r.rcode() == dns.rcode.SERVFAIL


async def test_slow_upstream_gets_stale_answer_then_refreshes(upstream: FakeUpstream,
                                                              transport: str) -> None:
    """Serve-stale: the upstream holds the refresh until the client has its answer, and
    stale_client_timeout is 0.1 s: the client gets the stale answer within the timeout; the
    refresh completes in the background and the next client gets the new answer from the
    cache."""
    upstream.handler = lambda rx: reply(rx.message, "A 192.0.2.1", ttl=60)
    cfg = forwarder_config({"up": [upstream.addr]}, cache={"stale_client_timeout": 0.1})
    cfg["upstreams"]["up"].update(timeout=2.0, attempts=1)
    release = asyncio.Event()

    async def held_refresh(rx: Received) -> dns.message.Message:
        await release.wait()
        return reply(rx.message, "A 192.0.2.2", ttl=60)

    async with running(cfg) as srv:
        await query(srv, transport, "www.example.com")
        skip_ahead(srv, 120)
        upstream.handler = held_refresh
        started = time.monotonic()
        stale = await query(srv, transport, "www.example.com", use_edns=0)
        waited = time.monotonic() - started
        release.set()
        await cache_of(srv).flights.wait_idle()
        fresh = await query(srv, transport, "www.example.com", use_edns=0)
    assert addresses(stale) == ["192.0.2.1"] and ede_of(stale) == [wire.Ede.STALE_ANSWER]
    assert waited < 0.9
    assert addresses(fresh) == ["192.0.2.2"] and ede_of(fresh) == []
    assert len(upstream.received) == 2


async def test_identical_concurrent_queries_share_one_upstream_query(
        upstream: FakeUpstream) -> None:
    """Coalescing: 20 clients (10 UDP, 10 TCP) ask the same name while the upstream takes
    0.15 s: the upstream sees one query and every client gets the answer."""
    upstream.handler = lambda rx: Delay(0.15, reply(rx.message, "A 192.0.2.9"))
    coalesced = sample("forwarder_cache_coalesced_total")
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        asks = [query(srv, "udp" if i % 2 else "tcp", "popular.example.com")
                for i in range(20)]
        answers = await asyncio.gather(*asks)
    assert len(upstream.received) == 1
    assert all(addresses(a) == ["192.0.2.9"] for a in answers)
    assert sample("forwarder_cache_coalesced_total") == coalesced + 19


async def test_different_names_are_not_coalesced(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: Delay(0.1, reply(rx.message, "A 192.0.2.9"))
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        await asyncio.gather(*(query(srv, "udp", f"n{i}.example.com") for i in range(5)))
    names = sorted(rx.message.question[0].name.to_text() for rx in upstream.received)
    assert names == [f"n{i}.example.com." for i in range(5)]
