"""Truncation: UDP answers larger than the client's buffer get TC with the question kept;
truncated upstream replies are retried over TCP."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.conftest import forwarder_config, query, running
from tests.fakes import FakeUpstream, Received, Truncated, reply

# the listeners and upstream transports, on uvloop and on the default loop (its fallback)
pytestmark = pytest.mark.both_loops


def big_answer(rx: Received) -> dns.message.Message:
    return reply(rx.message, *[f"TXT \"{'x' * 90} {i}\"" for i in range(10)])


async def test_large_answer_truncated_for_client_without_edns(upstream: FakeUpstream) -> None:
    upstream.handler = big_answer
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "big.example", "TXT")
    assert r.flags & dns.flags.TC
    assert r.question[0].name.to_text() == "big.example."
    assert r.answer == []


async def test_large_answer_fits_client_edns_buffer(upstream: FakeUpstream) -> None:
    upstream.handler = big_answer
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "udp", "big.example", "TXT", use_edns=0, payload=4096)
        small = await query(srv, "udp", "big.example", "TXT", use_edns=0, payload=600)
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 10
    assert small.flags & dns.flags.TC and small.edns == 0


async def test_large_answer_complete_over_tcp(upstream: FakeUpstream) -> None:
    upstream.handler = big_answer
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = await query(srv, "tcp", "big.example", "TXT")
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 10


async def test_truncated_upstream_reply_retried_over_tcp(upstream: FakeUpstream,
                                                         upstream2: FakeUpstream,
                                                         transport: str) -> None:
    """Upstream says TC over UDP: the forwarder asks the same server again over TCP, once,
    and returns the full answer (about 1,100 bytes: it fits the EDNS client's UDP buffer)."""
    upstream.handler = lambda rx: Truncated() if rx.transport == "udp" else big_answer(rx)
    cfg = forwarder_config({"up": [upstream.addr, upstream2.addr]})
    async with running(cfg) as srv:
        r = await query(srv, transport, "big.example", "TXT", use_edns=0)
    assert [rx.transport for rx in upstream.received] == ["udp", "tcp"]
    assert upstream2.received == []
    assert r.rcode() == dns.rcode.NOERROR and len(r.answer[0]) == 10


async def test_udp_answers_never_exceed_the_advertised_1232(upstream: FakeUpstream) -> None:
    """A client claiming a 65000-byte buffer still gets at most 1232 bytes over UDP (no
    fragments, no amplification): TC, and the full answer over TCP."""
    def big(rx: Received) -> bytes:  # raw bytes: dnspython would refuse to exceed 1232
        records = [f"TXT \"{'y' * 200} {i}\"" for i in range(7)]
        return reply(rx.message, *records).to_wire(max_size=65535)

    upstream.handler = big
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        small = await query(srv, "udp", "big.example", "TXT", use_edns=0, payload=65000)
        whole = await query(srv, "tcp", "big.example", "TXT")
    assert len(whole.to_wire()) > 1232 >= len(small.to_wire())
    assert small.flags & dns.flags.TC and len(whole.answer[0]) == 7
