"""Cache semantics: TTL ageing, clamps, negative caching, SERVFAIL, eviction, key separation,
the client's letter case, post-policy entries, serve-stale, coalescing, prefetch, lifetime.

Queries are real client wire (dnspython); replies are upstream wire with OPT stripped, as
the upstream group hands them to the pipeline. A fake clock drives every TTL.
"""

from __future__ import annotations

import asyncio
import gc
import os
import struct
from collections.abc import Iterable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import config as config_mod
from forwarder import metrics, runtime
from forwarder.config import model
from forwarder.dns import wire
from forwarder.dns.reply import read as read_reply
from forwarder.errors import UpstreamError
from forwarder.query import Query, Reply
from forwarder.stages.cache import Cache, build
from tests.conftest import forwarder_config
from tests.fakes import reply as fake_reply

SOA = "SOA ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 {minimum}"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(cache: dict[str, Any] | None = None, **extra: Any) -> model.Config:
    data = forwarder_config({"g": ["127.0.0.1:53"], "h": ["127.0.0.2:53"]}, **extra)
    if cache is not None:
        data["cache"] = cache
    return config_mod.from_data(data, "<test>")


def make_cache(**settings: Any) -> tuple[Cache, Clock, model.Config]:
    cfg = make_config(settings)
    clock = Clock()
    return Cache(cfg, clock=clock), clock, cfg


def ask(cfg: model.Config, name: str, qtype: str = "A", *, do: bool = False, cd: bool = False,
        rule: int = 0, client: str = "127.0.0.1") -> Query:
    msg = dns.message.make_query(name, dns.rdatatype.from_text(qtype), want_dnssec=do)
    if cd:
        msg.flags |= dns.flags.CD
    q = Query.from_wire(msg.to_wire(), (client, 5300), "udp", 0.0)
    q.rule = cfg.rules[rule]
    return q


def upstream_reply(q: Query, *records: str, rcode: int = 0, ttl: int = 300,
                   authority: Iterable[str] = (), by: str = "upstream",
                   ede: tuple[tuple[int, str], ...] = (), tc: bool = False) -> Reply:
    msg = fake_reply(dns.message.from_wire(q.wire), *records, rcode=rcode, ttl=ttl,
                     authority=authority)
    if tc:
        msg.flags |= dns.flags.TC
    parsed = read_reply(msg.to_wire())
    return Reply(parsed.wire, parsed.rcode, by, ede or parsed.ede)


def seen(q: Query, reply: Reply) -> dns.message.Message:
    """What the client of *q* receives for *reply*."""
    return dns.message.from_wire(reply.to_client(q))


def ttls(q: Query, reply: Reply) -> list[int]:
    msg = seen(q, reply)
    return [rrset.ttl for rrset in msg.answer + msg.authority]


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


# --- TTLs ------------------------------------------------------------------------------


def test_hit_answers_stored_reply_with_ttl_decremented_by_age() -> None:
    """Cache: store A www.example.com TTL 300; 100 s later the client sees TTL 200."""
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1"))
    hits = sample("forwarder_cache_hits_total")

    first = cache.get(ask(cfg, "www.example.com"))
    assert first is not None and first.answered_by == "cache"
    assert ttls(q, first) == [300]
    clock.now += 100.4
    later = cache.get(q)
    assert later is not None and ttls(q, later) == [200]
    assert str(seen(q, later).answer[0][0]) == "192.0.2.1"
    assert sample("forwarder_cache_hits_total") == hits + 2


def test_same_second_hits_give_the_same_bytes_and_age_once() -> None:
    """Cache: two hits in one second give the same bytes; TTLs age by whole seconds."""
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1"))
    clock.now += 5.1
    a, b = cache.get(q), cache.get(q)
    assert a is not None and b is not None and a.wire == b.wire
    assert dns.message.from_wire(a.wire).answer[0].ttl == 295


def test_each_rrset_ages_and_entry_expires_with_smallest_ttl() -> None:
    """Cache: CNAME TTL 300 + A TTL 60: at +30 s TTLs are 270 and 30; at +60 s it is gone."""
    cache, clock, cfg = make_cache(serve_stale=False)
    q = ask(cfg, "www.example.com")
    msg = fake_reply(dns.message.from_wire(q.wire), "CNAME web.example.net.", ttl=300)
    target = fake_reply(dns.message.from_wire(q.wire), "web.example.net. A 192.0.2.7", ttl=60)
    msg.answer.extend(target.answer)
    parsed = read_reply(msg.to_wire())
    cache.put(q, Reply(parsed.wire, parsed.rcode, "upstream"))

    clock.now += 30
    reply = cache.get(q)
    assert reply is not None and ttls(q, reply) == [270, 30]
    clock.now += 30
    misses = sample("forwarder_cache_misses_total")
    assert cache.get(q) is None
    assert sample("forwarder_cache_misses_total") == misses + 1


def test_min_ttl_raises_short_ttls_clients_see_the_clamped_value() -> None:
    """Cache: min_ttl 60 and an answer with TTL 5: clients see 60; it lives 60 s."""
    cache, clock, cfg = make_cache(min_ttl=60, serve_stale=False)
    q = ask(cfg, "short.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=5))
    clock.now += 30
    reply = cache.get(q)
    assert reply is not None and ttls(q, reply) == [30]
    clock.now += 30
    assert cache.get(q) is None


def test_max_ttl_caps_long_ttls() -> None:
    """Cache: max_ttl 3600 and an answer with TTL 86400: clients see 3600; it lives 3600 s."""
    cache, clock, cfg = make_cache(max_ttl=3600, serve_stale=False)
    q = ask(cfg, "long.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=86_400))
    reply = cache.get(q)
    assert reply is not None and ttls(q, reply) == [3600]
    clock.now += 3600
    assert cache.get(q) is None


def test_ttl_zero_answer_is_not_cached() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "zero.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=0))
    assert cache.get(q) is None and len(cache) == 0


# --- negative answers (RFC 2308) ---------------------------------------------------------


@pytest.mark.parametrize("rcode", [dns.rcode.NXDOMAIN, dns.rcode.NOERROR])
def test_negative_answer_cached_for_soa_minimum(rcode: int) -> None:
    """Cache: NXDOMAIN / NODATA with SOA TTL 900, MINIMUM 60: cached 60 s, SOA TTL shown 60."""
    cache, clock, cfg = make_cache(serve_stale=False)
    q = ask(cfg, "missing.example.com")
    cache.put(q, upstream_reply(q, rcode=rcode, ttl=900,
                                authority=[f"example.com. {SOA.format(minimum=60)}"]))
    reply = cache.get(q)
    assert reply is not None and reply.rcode == rcode
    assert ttls(q, reply) == [60]
    clock.now += 59
    assert cache.get(q) is not None
    clock.now += 1
    assert cache.get(q) is None


def test_negative_ttl_uses_soa_ttl_when_smaller_than_minimum() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "missing.example.com")
    cache.put(q, upstream_reply(q, rcode=dns.rcode.NXDOMAIN, ttl=20,
                                authority=[f"example.com. {SOA.format(minimum=600)}"]))
    reply = cache.get(q)
    assert reply is not None and ttls(q, reply) == [20]


def test_max_negative_ttl_caps_and_min_ttl_does_not_lengthen() -> None:
    """Cache: max_negative_ttl 10 caps a 3600 s negative TTL; min_ttl 300 leaves it at 10."""
    cache, clock, cfg = make_cache(max_negative_ttl=10, min_ttl=300, serve_stale=False)
    q = ask(cfg, "missing.example.com")
    cache.put(q, upstream_reply(q, rcode=dns.rcode.NXDOMAIN, ttl=3600,
                                authority=[f"example.com. {SOA.format(minimum=3600)}"]))
    reply = cache.get(q)
    assert reply is not None and ttls(q, reply) == [10]
    clock.now += 10
    assert cache.get(q) is None


def test_negative_answer_without_soa_is_not_cached() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "missing.example.com")
    cache.put(q, upstream_reply(q, rcode=dns.rcode.NXDOMAIN))
    nodata = ask(cfg, "nodata.example.com")
    cache.put(nodata, upstream_reply(nodata))
    assert len(cache) == 0


# --- SERVFAIL and uncacheable replies ------------------------------------------------------


def test_servfail_cached_for_servfail_ttl_only() -> None:
    cache, clock, cfg = make_cache(servfail_ttl=3)
    q = ask(cfg, "broken.example.com")
    cache.put(q, upstream_reply(q, rcode=dns.rcode.SERVFAIL))
    reply = cache.get(q)
    assert reply is not None and reply.rcode == dns.rcode.SERVFAIL
    clock.now += 3
    assert cache.get(q) is None
    assert cache.stale(q) is None  # a SERVFAIL is never served stale


def test_servfail_ttl_zero_means_never() -> None:
    cache, _clock, cfg = make_cache(servfail_ttl=0)
    q = ask(cfg, "broken.example.com")
    cache.put(q, upstream_reply(q, rcode=dns.rcode.SERVFAIL))
    assert len(cache) == 0


def test_servfail_does_not_replace_an_answer_that_can_be_served_stale() -> None:
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 120
    cache.put(q, upstream_reply(q, rcode=dns.rcode.SERVFAIL))
    stale = cache.stale(q)
    assert stale is not None and stale.rcode == dns.rcode.NOERROR


@pytest.mark.parametrize("rcode", [dns.rcode.REFUSED, dns.rcode.FORMERR, dns.rcode.NOTIMP])
def test_error_rcodes_from_upstreams_are_not_cached(rcode: int) -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, rcode=rcode))
    assert cache.get(q) is None


def test_truncated_reply_is_not_cached() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "big.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", tc=True))
    assert cache.get(q) is None


@pytest.mark.parametrize("data", [
    b"", b"\x00" * 5, b"\x00\x00\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00\x03www\x00\x00\x01",
    b"\x00\x00\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03www\x00\x00\x01\x00\x01\xc0\x0c\x00",
])
def test_malformed_reply_is_not_cached_and_does_not_raise(data: bytes) -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "www")
    cache.put(q, Reply(data, 0, "upstream"))
    assert len(cache) == 0


# --- the key -------------------------------------------------------------------------------


def test_client_letter_case_is_kept_on_a_hit() -> None:
    """Cache: stored for www.example.com; asked WwW.ExAmPlE.CoM, the reply's question and
    answer owner carry the client's case (0x20)."""
    cache, _clock, cfg = make_cache()
    first = ask(cfg, "www.example.com")
    cache.put(first, upstream_reply(first, "A 192.0.2.1"))
    mixed = ask(cfg, "WwW.ExAmPlE.CoM")
    reply = cache.get(mixed)
    assert reply is not None
    msg = seen(mixed, reply)
    assert msg.id == mixed.id
    assert msg.question[0].name.to_text() == "WwW.ExAmPlE.CoM."
    assert msg.answer[0].name.to_text() == "WwW.ExAmPlE.CoM."  # compressed to the question
    assert b"WwW\x07ExAmPlE\x03CoM" in reply.to_client(mixed)


@pytest.mark.parametrize("flags", [{"do": True}, {"cd": True}])
def test_do_and_cd_bits_are_separate_entries(flags: dict[str, bool]) -> None:
    cache, _clock, cfg = make_cache()
    plain = ask(cfg, "www.example.com")
    cache.put(plain, upstream_reply(plain, "A 192.0.2.1"))
    other = ask(cfg, "www.example.com", **flags)
    assert cache.get(other) is None
    cache.put(other, upstream_reply(other, "A 192.0.2.2"))
    got_plain, got_other = cache.get(plain), cache.get(other)
    assert got_plain is not None and got_other is not None
    assert str(seen(plain, got_plain).answer[0][0]) == "192.0.2.1"
    assert str(seen(other, got_other).answer[0][0]) == "192.0.2.2"


@pytest.mark.parametrize("qtype", ["HTTPS", "AAAA", "TXT"])
def test_other_types_are_cached(qtype: str) -> None:
    """Cache: HTTPS (type 65, 0x0041: an ASCII letter in the question bytes), AAAA, TXT."""
    record = {"HTTPS": '1 . alpn="h2" ipv4hint=10.0.0.1', "AAAA": "2001:db8::1",
              "TXT": '"v=spf1 -all"'}[qtype]
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "svc.example.com", qtype)
    cache.put(q, upstream_reply(q, f"{qtype} {record}"))
    reply = cache.get(ask(cfg, "SVC.example.com", qtype))
    assert reply is not None and reply.rcode == 0


def test_type_and_rule_are_part_of_the_key() -> None:
    """Cache: a rule matching on client networks gets its own entries for the same name."""
    cfg = make_config(zones=[
        {"match": ".", "upstream": "g", "clients": ["10.0.0.0/8"]},
        {"match": ".", "upstream": "h"},
    ])
    cache = Cache(cfg, clock=Clock())
    office = ask(cfg, "www.example.com", rule=0, client="10.1.1.1")
    cache.put(office, upstream_reply(office, "A 10.0.0.5"))
    assert cache.get(ask(cfg, "www.example.com", rule=1)) is None
    assert cache.get(ask(cfg, "www.example.com", "AAAA", rule=0)) is None
    assert cache.get(ask(cfg, "www.example.com", rule=0)) is not None


# --- post-policy entries -------------------------------------------------------------------


def test_blocked_answer_is_cached_with_its_ede_for_the_policy_ttl() -> None:
    """Cache: a policy REFUSED with EDE 15 is served from the cache with the same EDE for
    the policy's ttl (45 s here)."""
    cfg = make_config(
        zones=[{"match": ".", "upstream": "g", "policy": "p"}],
        policies={"p": {"on_violation": "refuse", "ttl": 45}})
    clock = Clock()
    cache = Cache(cfg, clock=clock)
    q = ask(cfg, "s3.ap-northeast-1.amazonaws.com")
    ede = ((int(wire.Ede.BLOCKED), "s3.ap-northeast-1.amazonaws.com -> 52.219.1.1 blocked"),)
    cache.put(q, upstream_reply(q, rcode=dns.rcode.REFUSED, by="policy", ede=ede))
    reply = cache.get(ask(cfg, "s3.ap-northeast-1.amazonaws.com", client="10.9.9.9"))
    assert reply is not None and reply.rcode == dns.rcode.REFUSED and reply.ede == ede
    msg = dns.message.from_wire(reply.to_client(ask(cfg, "s3.ap-northeast-1.amazonaws.com",
                                                    do=True)))
    assert msg.options[0].code == 15  # EDE reaches an EDNS client
    clock.now += 45
    assert cache.get(q) is None


def test_rewritten_answer_is_cached_as_rewritten() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "s3.ap-northeast-1.amazonaws.com")
    ede = ((int(wire.Ede.FORGED_ANSWER), "rewritten by policy p"),)
    cache.put(q, upstream_reply(q, "A 10.0.1.15", ttl=30, by="policy", ede=ede))
    reply = cache.get(q)
    assert reply is not None and reply.ede == ede
    assert str(seen(q, reply).answer[0][0]) == "10.0.1.15"


# --- eviction ------------------------------------------------------------------------------


def test_max_entries_evicts_least_recently_used() -> None:
    cache, _clock, cfg = make_cache(max_entries=3)
    evictions = sample("forwarder_cache_evictions_total")
    names = ["a.example", "b.example", "c.example"]
    for name in names:
        q = ask(cfg, name)
        cache.put(q, upstream_reply(q, "A 192.0.2.1"))
    assert cache.get(ask(cfg, "a.example")) is not None  # a is now the most recent
    d = ask(cfg, "d.example")
    cache.put(d, upstream_reply(d, "A 192.0.2.1"))
    assert len(cache) == 3
    assert cache.get(ask(cfg, "b.example")) is None
    assert cache.get(ask(cfg, "a.example")) is not None
    assert cache.get(d) is not None
    assert sample("forwarder_cache_evictions_total") == evictions + 1


def test_entries_gauge_follows_inserts_and_close() -> None:
    before = sample("forwarder_cache_entries")
    cache, _clock, cfg = make_cache(max_entries=2)
    for name in ("a.example", "b.example", "c.example"):
        q = ask(cfg, name)
        cache.put(q, upstream_reply(q, "A 192.0.2.1"))
    assert sample("forwarder_cache_entries") == before + 2
    cache.close()
    assert sample("forwarder_cache_entries") == before


# --- serve-stale ---------------------------------------------------------------------------


def test_stale_answer_has_ttl_30_and_ede_3() -> None:
    """Serve-stale: expired 10 min ago (max_stale 1 day): TTL 30 and EDE 3 Stale Answer."""
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com", do=True)
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 660
    stale_before = sample("forwarder_cache_stale_served_total")
    assert cache.get(q) is None
    reply = cache.stale(q)
    assert reply is not None and reply.answered_by == "stale"
    msg = seen(q, reply)
    assert [rrset.ttl for rrset in msg.answer] == [30]
    assert [(o.code, o.otype) for o in msg.options] == [(wire.Ede.STALE_ANSWER, 15)]
    assert sample("forwarder_cache_stale_served_total") == stale_before + 1


def test_no_stale_answer_past_max_stale_or_when_disabled() -> None:
    cache, clock, cfg = make_cache(max_stale=100)
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 160
    assert cache.stale(q) is None

    off, clock, cfg = make_cache(serve_stale=False)
    q = ask(cfg, "www.example.com")
    off.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 61
    assert off.stale(q) is None
    assert off.get(q) is None and len(off) == 0  # expired and useless: dropped


# --- coalescing, stale timeout, prefetch ----------------------------------------------------


def fetcher(cache: Cache, q: Query, answers: list[Reply], release: asyncio.Event,
            calls: list[int]) -> Any:
    async def fetch() -> Reply:
        calls.append(1)
        await release.wait()
        reply = answers.pop(0)
        cache.put(q, reply)
        return reply

    return fetch


async def test_concurrent_identical_queries_share_one_fetch() -> None:
    """Coalescing: 20 concurrent identical queries, one fetch; every query gets its answer."""
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    release, calls = asyncio.Event(), []
    fetch = fetcher(cache, q, [upstream_reply(q, "A 192.0.2.1")], release, calls)
    coalesced = sample("forwarder_cache_coalesced_total")
    waiting = [asyncio.ensure_future(cache.flights.share(ask(cfg, "www.example.com"), fetch))
               for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    replies = await asyncio.gather(*waiting)
    assert calls == [1]
    assert {r.rcode for r in replies} == {0}
    assert sample("forwarder_cache_coalesced_total") == coalesced + 19
    assert cache.get(q) is not None


async def test_cancelled_waiter_does_not_cancel_the_shared_fetch() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    release, calls = asyncio.Event(), []
    fetch = fetcher(cache, q, [upstream_reply(q, "A 192.0.2.1")], release, calls)
    leader = asyncio.ensure_future(cache.flights.share(q, fetch))
    follower = asyncio.ensure_future(cache.flights.share(ask(cfg, "www.example.com"), fetch))
    await asyncio.sleep(0)
    leader.cancel()
    release.set()
    assert (await follower).rcode == 0
    assert leader.cancelled()


async def test_fetch_error_reaches_every_waiter() -> None:
    cache, _clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")

    async def fail() -> Reply:
        await asyncio.sleep(0)
        raise UpstreamError(wire.Ede.NO_REACHABLE_AUTHORITY, "no upstream in group g answered")

    results = await asyncio.gather(cache.flights.share(q, fail), cache.flights.share(q, fail),
                                   return_exceptions=True)
    assert all(isinstance(r, UpstreamError) for r in results)


async def test_slow_fetch_answers_stale_after_client_timeout_then_refreshes() -> None:
    """Serve-stale: an expired entry and a fetch slower than stale_client_timeout: the client
    gets the stale answer; the fetch finishes in the background and refreshes the entry."""
    cache, clock, cfg = make_cache(stale_client_timeout=0.05)
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 61
    release, calls = asyncio.Event(), []
    fetch = fetcher(cache, q, [upstream_reply(q, "A 192.0.2.2")], release, calls)

    reply = await cache.flights.share(q, fetch)
    assert reply.answered_by == "stale"
    assert str(seen(q, reply).answer[0][0]) == "192.0.2.1"
    release.set()
    await cache.flights.wait_idle()
    fresh = cache.get(q)
    assert fresh is not None and str(seen(q, fresh).answer[0][0]) == "192.0.2.2"


async def test_failed_refresh_serves_stale_at_once_for_the_recheck_period() -> None:
    """Serve-stale: after a refresh failed, get() answers stale without asking upstream for
    stale_ttl seconds (RFC 8767 failure recheck), then lets the next query try again."""
    cache, clock, cfg = make_cache(stale_ttl=30)
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 61
    assert cache.get(q) is None

    async def fail() -> Reply:
        raise UpstreamError(wire.Ede.NETWORK_ERROR, "no upstream in group g answered")

    with pytest.raises(UpstreamError):
        await cache.flights.share(q, fail)
    assert cache.stale(q) is not None  # what the pipeline's error boundary asks
    again = cache.get(q)
    assert again is not None and again.answered_by == "stale"
    clock.now += 30
    assert cache.get(q) is None


async def test_upstream_servfail_is_replaced_by_stale_answer() -> None:
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 61
    servfail = upstream_reply(q, rcode=dns.rcode.SERVFAIL)

    async def fetch() -> Reply:
        cache.put(q, servfail)
        return servfail

    reply = await cache.flights.share(q, fetch)
    assert reply.answered_by == "stale" and reply.rcode == 0


async def test_policy_servfail_is_not_replaced_by_stale_answer() -> None:
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 61
    blocked = upstream_reply(q, rcode=dns.rcode.SERVFAIL, by="policy")

    async def fetch() -> Reply:
        return blocked

    assert await cache.flights.share(q, fetch) is blocked


async def test_prefetch_refreshes_a_popular_entry_before_it_expires() -> None:
    """Prefetch: an entry hit twice, asked again with < 10% of its TTL left, is answered
    from the cache while a background fetch replaces it."""
    cache, clock, cfg = make_cache(prefetch=True)
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=100))
    assert cache.get(q) is not None and cache.get(q) is not None
    clock.now += 95
    assert cache.get(q) is None  # left to coalesce(), which answers and refreshes
    release, calls = asyncio.Event(), []
    fetch = fetcher(cache, q, [upstream_reply(q, "A 192.0.2.2", ttl=100)], release, calls)
    reply = await cache.flights.share(q, fetch)
    assert reply.answered_by == "cache" and ttls(q, reply) == [5]
    assert str(seen(q, reply).answer[0][0]) == "192.0.2.1"
    assert cache.get(q) is not None  # the refresh is in flight: plain hits meanwhile
    release.set()
    await cache.flights.wait_idle()
    assert calls == [1]
    refreshed = cache.get(q)
    assert refreshed is not None and ttls(q, refreshed) == [100]


async def test_prefetch_off_by_default() -> None:
    cache, clock, cfg = make_cache()
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=100))
    for _ in range(3):
        assert cache.get(q) is not None
    clock.now += 95
    assert cache.get(q) is not None


async def test_close_cancels_background_refresh() -> None:
    cache, clock, cfg = make_cache(stale_client_timeout=0.01)
    q = ask(cfg, "www.example.com")
    cache.put(q, upstream_reply(q, "A 192.0.2.1", ttl=60))
    clock.now += 61
    release, calls = asyncio.Event(), []
    fetch = fetcher(cache, q, [upstream_reply(q, "A 192.0.2.2")], release, calls)
    assert (await cache.flights.share(q, fetch)).answered_by == "stale"
    background = [f.task for f in cache.flights._flights.values()]
    assert len(background) == 1
    cache.close()
    await asyncio.gather(*background, return_exceptions=True)
    assert background[0].cancelled()


# --- building and reloads --------------------------------------------------------------------


def test_build_shares_the_cache_when_answers_stay_the_same() -> None:
    """Reload: same cache settings, rules, policies and groups keep the cache and its
    entries; the old runtime's close does not close the shared cache."""
    cfg = make_config()
    old = runtime.build(cfg)
    q = ask(cfg, "www.example.com")
    old.cache.put(q, upstream_reply(q, "A 192.0.2.1"))
    changed_acl = make_config(acl={"allow": ["127.0.0.0/8"]})
    new = runtime.build(changed_acl, previous=old)
    assert new.cache is old.cache
    old.close()
    assert not new.cache.closed and new.cache.get(q) is not None
    new.close()
    assert new.cache.closed


@pytest.mark.parametrize("change", [
    {"cache": {"max_entries": 10}},
    {"zones": [{"match": ".", "upstream": "h"}]},
    {"policies": {"p": {"on_violation": "refuse"}}},
])
def test_build_starts_empty_when_routing_policy_or_settings_change(change: dict[str, Any]) -> None:
    old = runtime.build(make_config())
    new = runtime.build(make_config(**change), previous=old)
    assert new.cache is not old.cache and len(new.cache) == 0


def test_cache_disabled_builds_nothing() -> None:
    cfg = make_config({"enabled": False})
    rt = runtime.build(cfg)
    assert rt.cache is None
    assert build(cfg, None, None) is None


def test_entries_cost_the_garbage_collector_nothing() -> None:
    """5,000 cached answers leave (next to) nothing for the collector once a young
    collection has looked at them, so full collections do not grow with the cache (with
    entries as objects they were all tracked: 60-90 ms per full collection at 100,000)."""
    cache, _clock, cfg = make_cache(max_entries=10_000)
    first = ask(cfg, "shape.example")
    cache.put(first, upstream_reply(first, "A 192.0.2.1"))
    gc.collect(1)
    before = len(gc.get_objects())
    for i in range(5_000):
        q = ask(cfg, f"n{i:05}.example")
        cache.put(q, upstream_reply(q, "A 192.0.2.1"))
    gc.collect(1)
    assert len(cache) == 5_001
    assert len(gc.get_objects()) - before < 100
    hit = cache.get(ask(cfg, "n00042.example"))  # still answers, aged by the clock
    assert hit is not None and seen(ask(cfg, "n00042.example"), hit).answer


# --- memory -----------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def realistic_reply(name: bytes, i: int) -> bytes:
    """A typical forwarded answer: two A records (compressed to the question), no OPT."""
    question = name + b"\x00\x01\x00\x01"
    records = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4)
                       + struct.pack("!I", 0x0A000000 + (i * 2 + k) % 0xFFFFFF)
                       for k in range(2))
    return struct.pack("!HHHHHH", 0, 0x8180, 1, 2, 0, 0) + question + records


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_memory_stays_bounded_under_unique_names() -> None:
    """Memory: 300,000 unique names into a 100,000-entry cache: entries stay at 100,000 and
    RSS stays within 80 MB of where it started.

    Measured on Linux/CPython 3.11 (two-record A answers, 30-byte names): about 42 MB for
    the first 100,000 entries (about 440 bytes each) and about 51 MB after all 300,000
    names; under longer churn it settles near 65 MB as the table reaches its working size.
    An unbounded cache would need about 130 MB for the 300,000 names. A whole forwarder
    process with 200,000 cached entries measured 109 MB, and 113 MB once every entry had
    been hit (scripts/measure_rss.py).
    """
    cfg = make_config({"max_entries": 100_000})
    cache = Cache(cfg, clock=Clock())
    rule = cfg.rules[0]
    template = Query.from_wire(dns.message.make_query("x.example", "A").to_wire(),
                               ("127.0.0.1", 5300), "udp", 0.0)

    def insert(start: int, stop: int) -> None:
        for i in range(start, stop):
            label = b"host-%d" % i
            name = bytes([len(label)]) + label + b"\x0bcorp-domain\x07example\x00"
            template.qname = name
            template.rule = rule
            cache.put(template, Reply(realistic_reply(name, i), 0, "upstream"))

    limit = 80 * 2**20
    base = rss_bytes()
    insert(0, 100_000)
    full = rss_bytes() - base
    assert len(cache) == 100_000
    assert full < limit, f"{full / 2**20:.1f} MB for 100,000 entries"
    insert(100_000, 300_000)
    grown = rss_bytes() - base
    assert len(cache) == 100_000
    assert grown < limit, f"{grown / 2**20:.1f} MB after 300,000 names"
