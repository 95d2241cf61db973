"""Bad input: short packets and responses dropped, malformed queries FORMERR, other opcodes
NOTIMP; a fuzz corpus of random and mutated packets never crashes or stalls the server."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

import dns.message
import dns.rcode

from forwarder import metrics
from tests.conftest import forwarder_config, query, running
from tests.fakes import FakeUpstream, tcp_raw, udp_raw


def sample(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_malformed_total", {"kind": kind}) or 0.0


async def test_short_and_response_packets_dropped(upstream: FakeUpstream) -> None:
    response = dns.message.make_response(dns.message.make_query("x.example", "A")).to_wire()
    short_before, resp_before = sample("short"), sample("response")
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        assert await udp_raw(srv.address("udp"), b"\x01\x02\x03", timeout=0.2) is None
        assert await udp_raw(srv.address("udp"), response, timeout=0.2) is None
    assert sample("short") - short_before == 1
    assert sample("response") - resp_before == 1
    assert upstream.received == []


async def test_bad_question_gets_formerr(upstream: FakeUpstream) -> None:
    # header says one question, but the name runs past the end
    packet = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x07exam"
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        for send in (udp_raw, tcp_raw):
            data = await send(srv.address("udp" if send is udp_raw else "tcp"), packet)
            r = dns.message.from_wire(data)
            assert r.id == 0x1234 and r.rcode() == dns.rcode.FORMERR


async def test_two_questions_get_formerr(upstream: FakeUpstream) -> None:
    q = dns.message.make_query("x.example", "A").to_wire()
    q2 = q[:4] + struct.pack("!H", 2) + q[6:] + q[12:]
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = dns.message.from_wire(await udp_raw(srv.address("udp"), q2))
    assert r.rcode() == dns.rcode.FORMERR


async def test_other_opcode_gets_notimp(upstream: FakeUpstream) -> None:
    q = dns.message.make_query("x.example", "A")
    q.set_opcode(dns.opcode.UPDATE)
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        r = dns.message.from_wire(await udp_raw(srv.address("udp"), q.to_wire()))
    assert r.rcode() == dns.rcode.NOTIMP
    assert upstream.received == []


def mutations(rng: random.Random, seeds: list[bytes], count: int) -> list[bytes]:
    out = []
    for i in range(count):
        if i % 4 == 0:
            out.append(rng.randbytes(rng.randrange(0, 80)))
            continue
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)):]
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        if len(data) > 2:
            data[2] &= 0x7F  # keep most of them queries, so the deeper parser is exercised
        out.append(bytes(data))
    return out


async def test_fuzz_udp_and_tcp_then_good_query(upstream: FakeUpstream) -> None:
    """Thousands of random and mutated packets over UDP and TCP: no crash, no stuck task,
    and a good query is still answered afterwards."""
    rng = random.Random(20261122)
    seeds = [
        dns.message.make_query("www.example.com", "A").to_wire(),
        dns.message.make_query("s3.amazonaws.com", "AAAA", use_edns=0, want_dnssec=True).to_wire(),
        dns.message.make_query("a.b.c.example", "TXT", use_edns=0, payload=4096).to_wire(),
    ]
    corpus = mutations(rng, seeds, 3000)
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    internal_before = metrics.REGISTRY.get_sample_value("forwarder_internal_errors_total")
    async with running(forwarder_config({"up": [upstream.addr]})) as srv:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        for i, packet in enumerate(corpus):
            sock.sendto(packet, srv.address("udp"))
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the server drain its socket
        sock.close()
        _reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        for packet in corpus[:500]:
            writer.write(struct.pack("!H", len(packet)) + packet)
        await writer.drain()
        writer.close()
        for transport in ("udp", "tcp"):
            r = await query(srv, transport, "still.example")
            assert r.rcode() == dns.rcode.NOERROR
        internal = metrics.REGISTRY.get_sample_value("forwarder_internal_errors_total")
        assert internal == internal_before
    assert loop_errors == []
    assert sample("short") + sample("formerr") > 0
