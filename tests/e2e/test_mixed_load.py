"""Many queries at once against an upstream that answers every way it can (late, not at
all, truncated, SERVFAIL, garbage, public addresses the policy blocks), several clients
asking the same names: every client gets an answer, and once they have, nothing is left
in flight anywhere (the pipeline's counters, the listener's, the cache's fetches)."""

from __future__ import annotations

import asyncio
import collections
import random
import time

import dns.message
import dns.rcode
import pytest

from forwarder import metrics
from tests.conftest import forwarder_config, in_flight, query, running
from tests.fakes import Delay, FakeUpstream, Received, Truncated, reply

# the listeners and upstream transports, on uvloop and on the default loop (its fallback)
pytestmark = pytest.mark.both_loops

KINDS = ("private", "public", "silent_once", "truncated", "servfail", "garbage", "slow")
EXPECTED = {
    "private": dns.rcode.NOERROR,  # passes the policy
    "public": dns.rcode.SERVFAIL,  # blocked by the policy (its default action)
    "silent_once": dns.rcode.NOERROR,  # the first try times out, the second is answered
    "truncated": dns.rcode.NOERROR,  # TC over UDP, then the answer over TCP
    "servfail": dns.rcode.SERVFAIL,  # every try answers SERVFAIL: the last one is passed on
    "garbage": dns.rcode.SERVFAIL,  # unreadable every time: SERVFAIL with EDE 22
    "slow": dns.rcode.NOERROR,  # answered after 0.1 s, while identical queries wait
}


async def test_mixed_outcomes_leave_nothing_in_flight(upstream: FakeUpstream) -> None:
    seen: collections.Counter[str] = collections.Counter()

    def handler(rx: Received) -> object:
        assert rx.message is not None
        name = rx.message.question[0].name.to_text(omit_final_dot=True)
        kind = name.split("-")[0]
        seen[name] += 1
        if kind == "private" or (kind == "silent_once" and seen[name] > 1):
            return reply(rx.message, "A 10.0.1.15")
        if kind == "public":
            return reply(rx.message, "A 52.219.1.1")
        if kind == "truncated":
            return Truncated() if rx.transport == "udp" else reply(rx.message, "A 10.0.1.16")
        if kind == "servfail":
            return reply(rx.message, rcode=dns.rcode.SERVFAIL)
        if kind == "garbage":
            return rx.wire[:2] + b"\x81\x80\x00\x01\x00\x01"  # an ID, then a cut-off header
        if kind == "slow":
            return Delay(0.1, reply(rx.message, "A 10.0.1.17"))
        return None  # silent_once, the first time

    upstream.handler = handler
    cfg = forwarder_config({"up": [upstream.addr]},
                           zones=[{"match": ".", "upstream": "up", "policy": "p"}],
                           policies={"p": {"protected": ["."]}})
    names = [f"{kind}-{i}.amazonaws.com" for kind in KINDS for i in range(4)]
    async with running(cfg) as srv:
        # every name three times at once: twice over UDP, once over TCP
        asks = [(name, query(srv, transport, name, timeout=5.0))
                for name in names for transport in ("udp", "udp", "tcp")]
        answers = await asyncio.gather(*(ask for _name, ask in asks))
        await srv.runtime.cache.flights.wait_idle()
        left = (*in_flight(srv), metrics.REGISTRY.get_sample_value("forwarder_inflight_queries"))
        # no fetch was left behind for identical queries to wait on: each name is
        # answered again (from the cache, or the upstream once more)
        again = await asyncio.gather(*(query(srv, "udp", name, timeout=5.0)
                                       for name in names))
    for (name, _ask), answer in zip(asks, answers, strict=True):
        assert answer.rcode() == EXPECTED[name.split("-")[0]], name
    for name, answer in zip(names, again, strict=True):
        assert answer.rcode() == EXPECTED[name.split("-")[0]], name
    assert left == (0, 0, 0, 0, 0.0)
    # identical queries in flight shared upstream queries: fewer than one per client
    assert sum(seen.values()) < len(asks)


async def test_expiring_answers_under_mixed_outcomes_lose_no_query(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    """Answers live one second, serve-stale and prefetch are on, and the upstreams answer
    at random (a fixed seed): fresh, blocked, silent, truncated, SERVFAIL, garbage, late or
    NXDOMAIN. Over rounds of 120 queries on 25 names, with entries expiring between rounds,
    every client gets an answer and nothing is left in flight."""
    rng = random.Random(20261122)

    def handler(rx: Received) -> object:
        assert rx.message is not None
        r = rng.random()
        if r < 0.35:
            return reply(rx.message, "A 10.0.1.15", ttl=1)
        if r < 0.45:
            return reply(rx.message, "A 52.219.1.1", ttl=1)
        if r < 0.55:
            return None
        if r < 0.62:
            return Truncated() if rx.transport == "udp" else reply(rx.message, "A 10.0.1.16")
        if r < 0.70:
            return reply(rx.message, rcode=dns.rcode.SERVFAIL)
        if r < 0.75:
            return rx.wire[:2] + b"\x81\x80\x00\x01"
        if r < 0.85:
            return Delay(rng.random() * 0.3, reply(rx.message, "A 10.0.1.17", ttl=1))
        return reply(rx.message, rcode=dns.rcode.NXDOMAIN)

    upstream.handler = upstream2.handler = handler
    cfg = forwarder_config(
        {"up": [upstream.addr, upstream2.addr]},
        zones=[{"match": ".", "upstream": "up", "policy": "p"}],
        policies={"p": {"protected": ["."], "on_violation": "strip"}},
        cache={"serve_stale": True, "stale_client_timeout": 0.2, "prefetch": True,
               "servfail_ttl": 1})
    names = [f"n{i}.example" for i in range(25)]
    async with running(cfg) as srv:
        for _ in range(3):
            asks = [query(srv, rng.choice(("udp", "udp", "tcp")), rng.choice(names),
                          timeout=4.0) for _ in range(120)]
            answers = await asyncio.gather(*asks)
            assert all(a.rcode() in (dns.rcode.NOERROR, dns.rcode.SERVFAIL, dns.rcode.NXDOMAIN)
                       for a in answers)
            await srv.runtime.cache.flights.wait_idle()
            now = time.monotonic()
            while int(time.monotonic()) < int(now) + 1:  # entries age a whole second
                await asyncio.sleep(0.05)
        left = in_flight(srv)
    assert left == (0, 0, 0, 0)
