"""TCP per RFC 7766: pipelining, out-of-order answers, idle timeout, connection cap."""

from __future__ import annotations

import asyncio
import struct

import dns.message
import dns.rcode
import pytest

from tests.conftest import forwarder_config, running
from tests.fakes import Delay, FakeUpstream, Received, reply

# the listeners and upstream transports, on uvloop and on the default loop (its fallback)
pytestmark = pytest.mark.both_loops


async def read_frame(reader: asyncio.StreamReader) -> dns.message.Message:
    (length,) = struct.unpack("!H", await reader.readexactly(2))
    return dns.message.from_wire(await reader.readexactly(length))


def frame(msg: dns.message.Message) -> bytes:
    data = msg.to_wire()
    return struct.pack("!H", len(data)) + data


async def test_pipelined_queries_answered_out_of_order(upstream: FakeUpstream) -> None:
    """Two queries on one connection: the slow one first, the fast one is answered first."""
    def handler(rx: Received) -> object:
        name = rx.message.question[0].name.to_text()
        answer = reply(rx.message, "A 192.0.2.1" if name.startswith("slow") else "A 192.0.2.2")
        return Delay(0.2, answer) if name.startswith("slow") else answer
    upstream.handler = handler
    cfg = forwarder_config({"up": [upstream.addr]})
    cfg["upstreams"]["up"]["timeout"] = 2.0
    async with running(cfg) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        slow = dns.message.make_query("slow.example", "A")
        fast = dns.message.make_query("fast.example", "A")
        writer.write(frame(slow) + frame(fast))
        first = await asyncio.wait_for(read_frame(reader), 3)
        second = await asyncio.wait_for(read_frame(reader), 3)
        writer.close()
    assert first.id == fast.id and second.id == slow.id
    assert first.answer[0][0].address == "192.0.2.2"
    assert second.answer[0][0].address == "192.0.2.1"


async def test_many_queries_on_one_connection(upstream: FakeUpstream) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        queries = [dns.message.make_query(f"q{i}.example", "A") for i in range(50)]
        writer.write(b"".join(frame(q) for q in queries))
        got = [await asyncio.wait_for(read_frame(reader), 3) for _ in queries]
        writer.close()
    assert sorted(m.id for m in got) == sorted(q.id for q in queries)
    assert all(m.rcode() == dns.rcode.NOERROR for m in got)


async def test_frame_split_across_segments(upstream: FakeUpstream) -> None:
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        q = dns.message.make_query("split.example", "A")
        data = frame(q)
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
        r = await asyncio.wait_for(read_frame(reader), 3)
        writer.close()
    assert r.id == q.id and r.rcode() == dns.rcode.NOERROR


async def test_idle_connection_is_closed(upstream: FakeUpstream) -> None:
    cfg = forwarder_config({"up": [upstream.addr]}, limits={"tcp_idle_timeout": 0.2})
    async with running(cfg) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        assert await asyncio.wait_for(reader.read(), 3) == b""  # EOF from the server
        writer.close()


async def test_idle_timeout_waits_for_outstanding_query(upstream: FakeUpstream) -> None:
    """A query outstanding longer than the idle timeout is still answered."""
    upstream.handler = lambda rx: Delay(0.4, reply(rx.message, "A 192.0.2.3"))
    cfg = forwarder_config({"up": [upstream.addr]}, limits={"tcp_idle_timeout": 0.1})
    cfg["upstreams"]["up"]["timeout"] = 1.0
    async with running(cfg) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        writer.write(frame(dns.message.make_query("slow.example", "A")))
        r = await asyncio.wait_for(read_frame(reader), 3)
        writer.close()
    assert r.answer[0][0].address == "192.0.2.3"


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Answers whether the server closed (or reset) the connection, reading what is left."""
    try:
        return await asyncio.wait_for(reader.read(), 3) == b""
    except ConnectionResetError:
        return True


async def test_a_new_connection_replaces_the_longest_idle_one(upstream: FakeUpstream) -> None:
    """At tcp_max_connections a new connection takes the place of the connection idle the
    longest (RFC 7766 6.2.3); the others keep working."""
    cfg = forwarder_config({"up": [upstream.addr]}, limits={"tcp_max_connections": 2})
    async with running(cfg) as srv:
        conns = [await asyncio.open_connection(*srv.address("tcp")) for _ in range(2)]
        for reader, writer in conns:  # the first is idle the longest
            writer.write(frame(dns.message.make_query("a.example", "A")))
            await asyncio.wait_for(read_frame(reader), 3)
        reader3, writer3 = await asyncio.open_connection(*srv.address("tcp"))
        writer3.write(frame(dns.message.make_query("b.example", "A")))
        assert (await asyncio.wait_for(read_frame(reader3), 3)).rcode() == dns.rcode.NOERROR
        assert await closed_by_server(conns[0][0])
        reader, writer = conns[1]
        writer.write(frame(dns.message.make_query("c.example", "A")))
        assert (await asyncio.wait_for(read_frame(reader), 3)).rcode() == dns.rcode.NOERROR
        for _, w in [*conns, (reader3, writer3)]:
            w.close()


async def test_connection_cap_refuses_when_every_connection_is_busy(
        upstream: FakeUpstream) -> None:
    """At tcp_max_connections with a query in flight on every connection, a new connection
    is refused; the queries in flight are answered."""
    upstream.handler = lambda rx: Delay(0.3, reply(rx.message, "A 192.0.2.9"))
    cfg = forwarder_config({"up": [upstream.addr]}, limits={"tcp_max_connections": 2})
    cfg["upstreams"]["up"]["timeout"] = 2.0
    async with running(cfg) as srv:
        conns = [await asyncio.open_connection(*srv.address("tcp")) for _ in range(2)]
        for i, (_, writer) in enumerate(conns):
            writer.write(frame(dns.message.make_query(f"busy{i}.example", "A")))
        await upstream.wait_for(2)
        reader3, writer3 = await asyncio.open_connection(*srv.address("tcp"))
        writer3.write(frame(dns.message.make_query("b.example", "A")))
        assert await closed_by_server(reader3)
        for reader, _ in conns:
            assert (await asyncio.wait_for(read_frame(reader), 3)).answer
        for _, w in [*conns, (reader3, writer3)]:
            w.close()


async def test_client_half_close_still_answered(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: Delay(0.1, reply(rx.message, "A 192.0.2.4"))
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        writer.write(frame(dns.message.make_query("x.example", "A")))
        writer.write_eof()
        r = await asyncio.wait_for(read_frame(reader), 3)
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
    assert r.answer[0][0].address == "192.0.2.4"


async def test_per_connection_cap_holds_with_one_big_write(upstream: FakeUpstream) -> None:
    """300 queries in one write with tcp_max_queries_per_connection 10: never more than 10
    in flight upstream at once, and every query is answered."""
    in_flight = 0
    most = 0

    async def handler(rx: Received) -> object:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.005)  # a slow upstream
        in_flight -= 1
        return reply(rx.message, "A 192.0.2.1")

    upstream.handler = handler
    cfg = forwarder_config({"up": [upstream.addr]},
                           limits={"tcp_max_queries_per_connection": 10})
    async with running(cfg) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        queries = [dns.message.make_query(f"c{i}.example", "A") for i in range(300)]
        writer.write(b"".join(frame(q) for q in queries))
        got = [await asyncio.wait_for(read_frame(reader), 5) for _ in queries]
        writer.close()
    assert sorted(m.id for m in got) == sorted(q.id for q in queries)
    assert most <= 10
