"""The cache's wire front: a repeat of a query answered from the cache in the same second
is answered from the bytes sent last time, with its own ID; it still honours the ACL,
counts in the metrics, ages TTLs by the second, and never outlives a reload."""

from __future__ import annotations

import asyncio
import socket

import dns.message
import dns.rcode

from forwarder import metrics
from tests.conftest import forwarder_config, running
from tests.fakes import FakeUpstream, reply


async def ask_raw(server_addr: tuple[str, int], query: dns.message.Message,
                  source: str = "127.0.0.1") -> dns.message.Message:
    """Sends *query* from *source* (a loopback address) and answers the reply."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    try:
        sock.sendto(query.to_wire(), server_addr)  # uvloop has no sock_sendto
        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 3)
    finally:
        sock.close()
    return dns.message.from_wire(data)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_repeats_answered_with_own_id_and_counted(upstream: FakeUpstream) -> None:
    """The first query goes upstream, the second is a cache hit the pipeline answers (and
    the front remembers); the cache then forgets the entry, so only the front can answer
    the four repeats without asking the upstream again: each with its own ID, each
    counted as a cache hit."""
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        hits_before = metrics.REGISTRY.get_sample_value("forwarder_cache_hits_total") or 0.0
        q = dns.message.make_query("www.example.com", "A")
        answers = []
        for i in range(6):
            if i == 2:
                srv.runtime.cache._entries.clear()  # from here only the front has the answer
            q.id = 1000 + i
            answers.append(await ask_raw(srv.address("udp"), q))
        assert srv.runtime.front.hits == 4  # not yet folded into the metrics
        assert [a.id for a in answers] == [1000 + i for i in range(6)]
        assert all(a.answer[0][0].address == "192.0.2.1" for a in answers)
        assert len(upstream.received) == 1
        hits = metrics.REGISTRY.get_sample_value("forwarder_cache_hits_total") - hits_before
        assert hits == 5


async def test_front_honours_the_acl(upstream: FakeUpstream) -> None:
    """The same bytes from a client outside acl.allow are refused, even after a hit."""
    cfg = forwarder_config({"up": [upstream.addr]}, acl={"allow": ["127.0.0.1/32"]})
    async with running(cfg) as srv:
        q = dns.message.make_query("www.example.com", "A")
        for _ in range(3):
            assert (await ask_raw(srv.address("udp"), q)).rcode() == dns.rcode.NOERROR
        refused = await ask_raw(srv.address("udp"), q, source="127.0.0.2")
    assert refused.rcode() == dns.rcode.REFUSED


async def test_ttls_age_by_the_second(upstream: FakeUpstream) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        clock = Clock()
        srv.runtime.cache.clock = clock
        q = dns.message.make_query("www.example.com", "A")
        first = await ask_raw(srv.address("udp"), q)
        await ask_raw(srv.address("udp"), q)
        same_second = await ask_raw(srv.address("udp"), q)
        clock.now += 7
        later = await ask_raw(srv.address("udp"), q)
        again = await ask_raw(srv.address("udp"), q)
    assert first.answer[0].ttl == 300
    assert same_second.answer[0].ttl == 300
    assert later.answer[0].ttl == 293 and again.answer[0].ttl == 293


async def test_front_does_not_survive_a_reload(upstream: FakeUpstream, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    cfg = forwarder_config({"up": [upstream.addr]})
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(cfg))
    async with running(cfg, path=str(path)) as srv:
        q = dns.message.make_query("www.example.com", "A")
        for _ in range(3):
            await ask_raw(srv.address("udp"), q)
        cfg["zones"] = [{"match": "example.com", "records": [
            {"name": "www.example.com", "type": "A", "value": "10.9.9.9"}]},
            {"match": ".", "upstream": "up"}]
        path.write_text(yaml.safe_dump(cfg))
        assert await srv.reload()
        after = await ask_raw(srv.address("udp"), q)
    assert after.answer[0][0].address == "10.9.9.9"


async def test_no_front_when_a_stage_must_see_every_query(upstream: FakeUpstream) -> None:
    cfg = forwarder_config({"up": [upstream.addr]}, rate_limit={"qps": 1000})
    async with running(cfg) as srv:
        assert srv.runtime.front is None


async def test_front_hands_over_at_expiry(upstream: FakeUpstream) -> None:
    """Once the cached answer's TTL runs out, the repeat goes back to the cache and the
    upstream (not the front's old bytes), and the fresh answer is fronted again."""
    upstream.handler = lambda rx: reply(rx.message, "A 192.0.2.1", ttl=5)
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        clock = Clock()
        srv.runtime.cache.clock = clock
        q = dns.message.make_query("www.example.com", "A")
        for _ in range(3):
            await ask_raw(srv.address("udp"), q)
        clock.now += 3
        aged = await ask_raw(srv.address("udp"), q)
        clock.now += 3
        fresh = await ask_raw(srv.address("udp"), q)
        again = await ask_raw(srv.address("udp"), q)
    assert aged.answer[0].ttl == 2
    assert len(upstream.received) == 2
    assert fresh.answer[0].ttl == 5 and again.answer[0].ttl == 5
