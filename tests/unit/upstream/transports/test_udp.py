"""UdpPool: replies matched by ID and question, strays counted, timeouts and ICMP errors
reported, and sockets of a dropped server closed only once their queries are done."""

from __future__ import annotations

import asyncio
import gc
import os
import socket

import dns.message
import pytest

from forwarder.dns import names
from forwarder.upstream.transports import udp
from tests.fakes import Delay, FakeUpstream, reply


def question(name: str = "a.example") -> tuple[bytes, bytes]:
    q = dns.message.make_query(name, "A", use_edns=False).to_wire()
    return q, names.from_text(name)


async def test_exchange_matches_reply(upstream: FakeUpstream) -> None:
    pool = udp.UdpPool("127.0.0.1", upstream.port)
    q, qname = question()
    data = await pool.exchange(q, qname, 1, 1, 2.0, lambda: None)
    assert dns.message.from_wire(data).answer[0][0].address == "192.0.2.1"
    pool.close()


async def test_stray_and_mismatched_replies(upstream: FakeUpstream) -> None:
    strays: list[int] = []
    mismatches: list[int] = []

    def handler(rx):  # type: ignore[no-untyped-def]
        wrong_id = reply(rx.message, "A 6.6.6.6")
        wrong_id.id ^= 0xFFFF
        other = dns.message.make_query("b.example", "A")
        other.id = rx.message.id
        return [wrong_id, reply(other, "A 6.6.6.6"), Delay(0.02, reply(rx.message, "A 192.0.2.5"))]

    upstream.handler = handler
    pool = udp.UdpPool("127.0.0.1", upstream.port, on_stray=lambda: strays.append(1))
    q, qname = question()
    data = await pool.exchange(q, qname, 1, 1, 2.0, lambda: mismatches.append(1))
    assert dns.message.from_wire(data).answer[0][0].address == "192.0.2.5"
    assert strays == [1] and mismatches == [1]
    pool.close()


async def test_timeout(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: None
    pool = udp.UdpPool("127.0.0.1", upstream.port)
    q, qname = question()
    with pytest.raises(TimeoutError):
        await pool.exchange(q, qname, 1, 1, 0.05, lambda: None)
    pool.close()


async def test_port_unreachable_is_an_oserror() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, then closed: nobody listens there
    pool = udp.UdpPool("127.0.0.1", port)
    q, qname = question()
    with pytest.raises(OSError):
        await pool.exchange(q, qname, 1, 1, 2.0, lambda: None)
    pool.close()


async def test_query_after_close_is_answered_and_leaves_no_socket(
        upstream: FakeUpstream) -> None:
    """A query that started under a configuration a reload replaced still gets its answer
    (no query is dropped on reload), and its one-off socket is closed afterwards."""
    pool = udp.UdpPool("127.0.0.1", upstream.port)
    pool.close()
    q, qname = question()
    # sockets earlier tests left in reference cycles must not be collected mid-count
    gc.collect()
    fds_before = len(os.listdir("/proc/self/fd"))
    data = await pool.exchange(q, qname, 1, 1, 2.0, lambda: None)
    assert dns.message.from_wire(data).answer[0][0].address == "192.0.2.1"
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_close_waits_for_queries_in_flight(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: Delay(0.1, reply(rx.message, "A 192.0.2.8"))
    pool = udp.UdpPool("127.0.0.1", upstream.port)
    q, qname = question()
    pending = asyncio.ensure_future(pool.exchange(q, qname, 1, 1, 2.0, lambda: None))
    await upstream.wait_for(1)
    pool.close()
    data = await pending
    assert dns.message.from_wire(data).answer[0][0].address == "192.0.2.8"
