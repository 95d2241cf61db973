"""Forwarding end to end: routing, failover, SERVFAIL with EDE, reply checks, EDNS, ACL.

Every test runs a real forwarder on loopback against fake upstreams the test controls and
asks it with dnspython, over UDP and TCP where the behaviour applies to both.
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import metrics
from forwarder.dns import wire
from tests.conftest import forwarder_config, in_flight, query, running
from tests.fakes import Delay, FakeUpstream, Received, WrongSource, answers, reply, udp_raw

# the listeners and upstream transports, on uvloop and on the default loop (its fallback)
pytestmark = pytest.mark.both_loops


def ede_of(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


async def test_forwards_and_returns_answer(upstream: FakeUpstream, transport: str) -> None:
    """Ask A example.com; the upstream's record reaches the client with RA set."""
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, transport, "example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.1"]
    assert r.flags & dns.flags.RA
    assert upstream.received[0].message.question[0].name.to_text() == "example.com."


async def test_longest_suffix_wins(upstream: FakeUpstream, upstream2: FakeUpstream,
                                   transport: str) -> None:
    """Routing: `amazonaws.com` beats `.`, `s3.amazonaws.com` beats `amazonaws.com`,
    label-wise (`notamazonaws.com` goes to the default) and case-insensitively."""
    async with FakeUpstream() as third:
        cfg = forwarder_config(
            {"default": [upstream.addr], "aws": [upstream2.addr], "s3": [third.addr]},
            zones=[{"match": ".", "upstream": "default"},
                   {"match": "amazonaws.com", "upstream": "aws"},
                   {"match": "s3.amazonaws.com", "upstream": "s3"}])
        async with running(cfg) as srv:
            await query(srv, transport, "ec2.AmazonAWS.com")
            await query(srv, transport, "bucket.s3.amazonaws.com")
            await query(srv, transport, "notamazonaws.com")
            await query(srv, transport, "example.org")
        assert [rx.message.question[0].name.to_text() for rx in upstream2.received] == [
            "ec2.AmazonAWS.com."]
        assert len(third.received) == 1
        assert len(upstream.received) == 2


async def test_no_matching_rule_is_refused(upstream: FakeUpstream, transport: str) -> None:
    cfg = forwarder_config({"up": [upstream.addr]}, zones=[{"match": "corp.example",
                                                            "upstream": "up"}])
    async with running(cfg) as srv:
        r = await query(srv, transport, "example.com")
    assert r.rcode() == dns.rcode.REFUSED
    assert upstream.received == []


async def test_refuse_action(upstream: FakeUpstream, transport: str) -> None:
    cfg = forwarder_config({"up": [upstream.addr]}, zones=[
        {"match": ".", "upstream": "up"}, {"match": "blocked.example", "action": "refuse"}])
    async with running(cfg) as srv:
        r = await query(srv, transport, "x.blocked.example")
        ok = await query(srv, transport, "fine.example")
    assert r.rcode() == dns.rcode.REFUSED
    assert ok.rcode() == dns.rcode.NOERROR
    assert len(upstream.received) == 1


async def test_qtype_and_client_matchers(upstream: FakeUpstream, upstream2: FakeUpstream,
                                         transport: str) -> None:
    """A rule narrowed by qtypes takes only those types; a rule for other client networks
    does not apply to loopback clients; both fall through to the shorter suffix."""
    cfg = forwarder_config({"main": [upstream.addr], "v6": [upstream2.addr]}, zones=[
        {"match": ".", "upstream": "main"},
        {"match": "example.com", "upstream": "v6", "qtypes": ["AAAA"]},
        {"match": "example.net", "upstream": "v6", "clients": ["10.0.0.0/8"]},
    ])
    async with running(cfg) as srv:
        await query(srv, transport, "www.example.com", "AAAA")
        await query(srv, transport, "www.example.com", "A")
        await query(srv, transport, "www.example.net", "A")
    assert [rx.message.question[0].rdtype for rx in upstream2.received] == [
        dns.rdatatype.AAAA]
    assert len(upstream.received) == 2


async def test_client_matcher_applies(upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    cfg = forwarder_config({"main": [upstream.addr], "lo": [upstream2.addr]}, zones=[
        {"match": ".", "upstream": "main"},
        {"match": "example.net", "upstream": "lo", "clients": ["127.0.0.0/8"]},
    ])
    async with running(cfg) as srv:
        await query(srv, "udp", "www.example.net")
    assert len(upstream2.received) == 1 and upstream.received == []


async def test_timeout_fails_over_to_next_server(upstream: FakeUpstream, upstream2: FakeUpstream,
                                                 transport: str) -> None:
    upstream.handler = lambda rx: None  # never answers
    cfg = forwarder_config({"up": [upstream.addr, upstream2.addr]})
    async with running(cfg) as srv:
        r = await query(srv, transport, "example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(upstream.received) == 1 and len(upstream2.received) == 1


async def test_servfail_from_one_server_fails_over(upstream: FakeUpstream,
                                                   upstream2: FakeUpstream) -> None:
    upstream.handler = lambda rx: reply(rx.message, rcode=dns.rcode.SERVFAIL)
    async with running(forwarder_config({"up": [upstream.addr, upstream2.addr]})) as srv:
        r = await query(srv, "udp", "example.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(upstream2.received) == 1


async def test_all_servers_time_out_servfail_with_ede_22(upstream: FakeUpstream,
                                                         transport: str) -> None:
    """Every try times out: SERVFAIL with EDE 22 (No Reachable Authority) naming the group."""
    upstream.handler = lambda rx: None
    cfg = forwarder_config({"r53-inbound": [upstream.addr]})
    async with running(cfg) as srv:
        r = await query(srv, transport, "example.com", use_edns=0)
    assert r.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(r)
    assert code == 22
    assert "r53-inbound" in text and "timed out" in text
    assert len(upstream.received) == 2  # attempts: 2


async def test_unreachable_port_servfail_with_ede_23(transport: str) -> None:
    """An upstream port that refuses (ICMP unreachable): EDE 23 (Network Error)."""
    cfg = forwarder_config({"dead": ["127.0.0.1:1"]})
    async with running(cfg) as srv:
        r = await query(srv, transport, "example.com", use_edns=0)
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede_of(r)[0][0] == 23
    assert "dead" in ede_of(r)[0][1]


async def test_no_ede_without_edns(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: None
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "example.com")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert r.edns < 0


async def test_wrong_id_wrong_question_wrong_source_ignored(upstream: FakeUpstream) -> None:
    """Spoofed replies (wrong ID, wrong question, wrong source port) are ignored; the real
    reply that follows is used."""
    def handler(rx: Received) -> object:
        good = reply(rx.message, "A 192.0.2.7")
        bad_id = reply(rx.message, "A 6.6.6.6")
        bad_id.id = (rx.message.id + 1) % 65536
        other = dns.message.make_query("evil.example", "A")
        other.id = rx.message.id
        bad_q = reply(other, "A 6.6.6.6")
        return [bad_id, bad_q, WrongSource(reply(rx.message, "A 6.6.6.6")),
                Delay(0.05, good)]
    upstream.handler = handler
    from forwarder import metrics
    before = metrics.REGISTRY.get_sample_value(
        "forwarder_upstream_errors_total",
        {"group": "up", "server": upstream.addr, "kind": "mismatch"}) or 0.0
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "example.com")
        after = metrics.REGISTRY.get_sample_value(  # stopping forgets the server's series
            "forwarder_upstream_errors_total",
            {"group": "up", "server": upstream.addr, "kind": "mismatch"})
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.7"]
    assert after - before == 2  # the wrong source never reaches the connected socket


async def test_garbage_reply_is_not_accepted(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: b"\x00\x01garbage"
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "example.com")
    assert r.rcode() == dns.rcode.SERVFAIL


async def test_upstream_ids_random_and_source_ports_rotate(
        upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upstream query has a random ID; the pooled sockets' source ports are random
    and each socket is replaced after SOCKET_USES queries, so ports keep changing."""
    from forwarder.upstream.transports import udp

    monkeypatch.setattr(udp, "POOL_SOCKETS", 2)
    monkeypatch.setattr(udp, "SOCKET_USES", 3)
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        for i in range(12):
            await query(srv, "udp", f"n{i}.example.com")
    ids = {rx.message.id for rx in upstream.received}
    ports = [rx.source[1] for rx in upstream.received]
    assert len(ids) >= 11
    assert max(Counter(ports).values()) <= 3  # no socket outlived its SOCKET_USES
    assert len(set(ports)) >= 4


async def test_edns_upstream_advertises_1232_and_carries_do_cd(upstream: FakeUpstream) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        await query(srv, "udp", "example.com", use_edns=0, payload=4096, want_dnssec=True)
        q = dns.message.make_query("example.com", "A")
        q.flags |= dns.flags.CD
        host, port = srv.address("udp")
        await dns.asyncquery.udp(q, host, port=port, timeout=3)
    first, second = (rx.message for rx in upstream.received)
    assert first.payload == 1232 and first.ednsflags & dns.flags.DO
    assert second.flags & dns.flags.CD
    assert not second.ednsflags & dns.flags.DO


async def test_the_cd_bit_of_the_query_is_copied_into_relayed_answers(
        upstream: FakeUpstream, transport: str) -> None:
    """RFC 4035 3.2.2: a relayed answer carries the CD bit of the client's query, whatever
    the upstream's reply said (as local answers do); from the cache too."""
    def handler(rx: Received) -> dns.message.Message:
        r = reply(rx.message, "A 192.0.2.1")
        r.flags ^= dns.flags.CD  # the upstream gets it wrong both ways
        return r
    upstream.handler = handler
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        host, port = srv.address(transport)
        got = []
        for name, cd in [("cd.example", True), ("plain.example", False),
                         ("cd.example", True), ("plain.example", False)]:  # then cached
            q = dns.message.make_query(name, "A")
            if cd:
                q.flags |= dns.flags.CD
            ask = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
            got.append(await ask(q, host, port=port, timeout=3))
    assert [bool(r.flags & dns.flags.CD) for r in got] == [True, False, True, False]
    assert all(r.answer for r in got)


async def test_dnssec_records_and_ad_pass_through(upstream: FakeUpstream) -> None:
    """A forwarder is transparent: RRSIGs reach a DO client, and AD is kept for it."""
    def handler(rx: Received) -> dns.message.Message:
        r = reply(rx.message, "A 192.0.2.1",
                  "example.com. RRSIG A 13 2 300 20300101000000 20200101000000 12345 "
                  "example.com. AAAA")
        r.flags |= dns.flags.AD
        return r
    upstream.handler = handler
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        with_do = await query(srv, "udp", "example.com", use_edns=0, want_dnssec=True)
        plain = await query(srv, "udp", "example.com", use_edns=0)
    assert {rrset.rdtype for rrset in with_do.answer} == {dns.rdatatype.A, dns.rdatatype.RRSIG}
    assert with_do.flags & dns.flags.AD and with_do.ednsflags & dns.flags.DO
    assert not plain.flags & dns.flags.AD


async def test_unknown_edns_version_gets_badvers(upstream: FakeUpstream, transport: str) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, transport, "example.com", use_edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert upstream.received == []


async def test_unknown_edns_options_not_echoed(upstream: FakeUpstream) -> None:
    opt = dns.edns.GenericOption(65001, b"secret")
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "example.com", use_edns=0, options=[opt])
    assert r.rcode() == dns.rcode.NOERROR
    assert all(o.otype != 65001 for o in r.options)
    assert all(o.otype != 65001 for o in upstream.received[0].message.options)


async def test_client_case_is_preserved(upstream: FakeUpstream, transport: str) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, transport, "ExAmPlE.CoM")
    assert r.question[0].name.to_text() == "ExAmPlE.CoM."


async def test_acl_refuses_other_clients(upstream: FakeUpstream, transport: str) -> None:
    """Not an open resolver: a client outside acl.allow gets REFUSED with EDE 18."""
    cfg = forwarder_config({"up": [upstream.addr]}, acl={"allow": ["10.0.0.0/8"]})
    from forwarder import metrics
    before = metrics.REGISTRY.get_sample_value("forwarder_acl_refused_total") or 0.0
    async with running(cfg) as srv:
        r = await query(srv, transport, "example.com", use_edns=0)
    assert r.rcode() == dns.rcode.REFUSED
    assert ede_of(r)[0][0] == 18
    assert upstream.received == []
    assert metrics.REGISTRY.get_sample_value("forwarder_acl_refused_total") - before == 1


async def test_default_acl_allows_loopback(upstream: FakeUpstream) -> None:
    cfg = forwarder_config({"up": [upstream.addr]})
    assert "acl" not in cfg
    async with running(cfg) as srv:
        r = await query(srv, "udp", "example.com")
    assert r.rcode() == dns.rcode.NOERROR


async def test_ipv6_listener_and_upstream() -> None:
    async with FakeUpstream(host="::1") as up6:
        cfg = forwarder_config({"up": [up6.addr]})
        cfg["listen"] = [{"address": "::1", "port": 0}]
        async with running(cfg) as srv:
            assert srv.address("udp")[0] == "::1"
            for transport in ("udp", "tcp"):
                r = await query(srv, transport, "example.com")
                assert r.answer[0][0].address == "192.0.2.1"


async def test_upstream_nxdomain_passes_through(upstream: FakeUpstream, transport: str) -> None:
    upstream.handler = answers({("www.example.com", "A"): ["A 192.0.2.9"]})
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, transport, "nope.example.com")
    assert r.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("payload", [b"\x12\x34\x01"])
async def test_raw_short_packet_dropped_server_still_answers(upstream: FakeUpstream,
                                                             payload: bytes) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        assert await udp_raw(srv.address("udp"), payload, timeout=0.2) is None
        r = await query(srv, "udp", "example.com")
    assert r.rcode() == dns.rcode.NOERROR


def test_wire_finish_sets_client_id() -> None:
    reply_wire = wire.synth_reply(wire.RD, b"\x00\x00\x01\x00\x01", wire.Rcode.NOERROR)
    out = wire.finish(0xBEEF, wire.RD, b"\x00\x00\x01\x00\x01", False, False, 512, reply_wire,
                      0, None)
    assert struct.unpack_from("!H", out)[0] == 0xBEEF


async def test_total_budget_stops_retries(upstream: FakeUpstream, transport: str) -> None:
    """attempts: 5 but budget 0.35 s with a 0.3 s timeout: the second try gets only what is
    left of the budget, there is no third, and the EDE says the budget was spent."""
    upstream.handler = lambda rx: None
    cfg = forwarder_config({"up": [upstream.addr]})
    cfg["upstreams"]["up"].update(timeout=0.3, attempts=5, budget=0.35)
    async with running(cfg) as srv:
        r = await query(srv, transport, "example.com", use_edns=0)
    assert r.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(r)
    assert code == 22 and "budget spent" in text
    assert len(upstream.received) == 2


class BrokenPolicy:
    """Stands in for an answer policy that fails with a bug on the next answer."""

    def __init__(self) -> None:
        self.broken = True

    def decide(self, q: object, upstream_reply: object, group: str) -> object:
        if self.broken:
            self.broken = False
            raise RuntimeError("bug in the policy")
        return upstream_reply


async def test_internal_error_while_answering_is_servfail_and_serving_goes_on(
        upstream: FakeUpstream, transport: str, caplog: pytest.LogCaptureFixture) -> None:
    """A bug while the upstream's reply is judged (for UDP, in the upstream socket's read
    callback) answers that query SERVFAIL with EDE 0, is counted and logged, and breaks
    nothing: the next query is answered and nothing stays in flight."""
    cfg = forwarder_config({"up": [upstream.addr]},
                           zones=[{"match": ".", "upstream": "up", "policy": "p"}],
                           policies={"p": {}})
    internal = metrics.REGISTRY.get_sample_value("forwarder_internal_errors_total") or 0.0
    async with running(cfg) as srv:
        srv.runtime.policies["p"] = BrokenPolicy()
        failed = await query(srv, transport, "first.example.com", use_edns=0)
        fine = await query(srv, transport, "second.example.com", use_edns=0)
        inflight = metrics.REGISTRY.get_sample_value("forwarder_inflight_queries")
    assert failed.rcode() == dns.rcode.SERVFAIL and ede_of(failed) == [(0, "internal error")]
    assert fine.rcode() == dns.rcode.NOERROR and fine.answer[0][0].address == "192.0.2.1"
    assert metrics.REGISTRY.get_sample_value("forwarder_internal_errors_total") == internal + 1
    assert inflight == 0
    assert "bug in the policy" in caplog.text


async def test_a_cancelled_retry_leaves_nothing_behind(upstream: FakeUpstream,
                                                       upstream2: FakeUpstream) -> None:
    """The first try times out and the retry goes on in a task; cancelling that task (as a
    loop shutting down does) ends the query without an answer and frees what it held: no
    query counts as in flight, and the same name asked again is fetched afresh instead
    of waiting on the abandoned fetch."""
    upstream.handler = lambda rx: None  # the first server never answers
    retried = asyncio.Event()

    async def held(rx: Received) -> dns.message.Message | None:
        if not retried.is_set():
            retried.set()
            await asyncio.sleep(30)  # the retry hangs until its task is cancelled
        return reply(rx.message, "A 192.0.2.7")

    upstream2.handler = held
    cfg = forwarder_config({"up": [upstream.addr, upstream2.addr]})
    async with running(cfg) as srv:
        host, port = srv.address("udp")
        lost = asyncio.ensure_future(dns.asyncquery.udp(
            dns.message.make_query("held.example.com", "A"), host, port=port, timeout=5))
        await retried.wait()
        tasks = list(srv.pipeline.tasks)
        assert in_flight(srv) == (1, 1, 1, 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert in_flight(srv) == (0, 0, 0, 0)
        again = await query(srv, "udp", "held.example.com")
        lost.cancel()
    assert again.rcode() == dns.rcode.NOERROR and again.answer[0][0].address == "192.0.2.7"


async def test_an_opt_record_outside_the_additional_section_is_malformed(
        upstream: FakeUpstream) -> None:
    """An upstream reply whose answer section holds a record of type OPT (41): strict
    parsers (dnspython among them) reject such a message, so it is a malformed reply,
    counted as such and never passed on: the client gets SERVFAIL naming the server, and
    nothing stays in flight."""
    def strange(rx: Received) -> bytes:
        opt_in_answer = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
        return (struct.pack("!6H", rx.message.id, 0x8180, 1, 1, 0, 0)
                + rx.message.question[0].name.to_wire() + struct.pack("!HH", 1, 1)
                + opt_in_answer)

    upstream.handler = strange
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        query_wire = dns.message.make_query("odd.example.com", "A").to_wire()
        replies = [await udp_raw(srv.address("udp"), query_wire) for _ in range(2)]
        inflight = in_flight(srv)
        malformed = metrics.REGISTRY.get_sample_value(
            "forwarder_upstream_errors_total",
            {"group": "up", "server": upstream.addr, "kind": "malformed"})
    for data in replies:
        assert data is not None and data[:2] == query_wire[:2]
        msg = dns.message.from_wire(data)
        assert msg.rcode() == dns.rcode.SERVFAIL and not msg.answer
    assert inflight == (0, 0, 0, 0)
    assert malformed == 4  # both tries (attempts: 2) of each of the two queries


async def test_a_bug_while_reading_the_upstream_reply_is_servfail(
        upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while an upstream reply is read in the socket's read callback (simulated:
    reading raises) answers SERVFAIL with EDE 0 instead of leaving the client waiting,
    and leaves nothing in flight; the next query is answered."""
    from forwarder.upstream import group as group_mod

    real = group_mod.reply_of
    calls = []

    def buggy(*args: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug while reading the reply")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(group_mod, "reply_of", buggy)
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        failed = await query(srv, "udp", "first.example.com", use_edns=0)
        fine = await query(srv, "udp", "second.example.com", use_edns=0)
        inflight = in_flight(srv)
    assert failed.rcode() == dns.rcode.SERVFAIL and ede_of(failed) == [(0, "internal error")]
    assert fine.rcode() == dns.rcode.NOERROR
    assert inflight == (0, 0, 0, 0)
