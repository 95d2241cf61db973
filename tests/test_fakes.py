"""Tests for tests/fakes.py: each response type over UDP and TCP, the answer builders, raw clients.

Waits for "no reply" use short client timeouts (there is no event for silence).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import pytest_asyncio

from tests import fakes

SILENCE = 0.1  # seconds a client waits before deciding no reply is coming


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[fakes.FakeUpstream]:
    async with fakes.FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def ask(
    fake: fakes.FakeUpstream, transport: str, q: dns.message.Message, **kwargs: object
) -> dns.message.Message:
    """Send *q* to *fake* with dnspython over *transport*."""
    query = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    kwargs.setdefault("timeout", 2.0)
    return await query(q, fake.host, port=fake.port, **kwargs)  # type: ignore[arg-type]


async def raw(
    fake: fakes.FakeUpstream, transport: str, payload: bytes, timeout: float = 2.0
) -> bytes | None:
    """Send raw bytes to *fake* over *transport*; return the first reply or None."""
    send = fakes.udp_raw if transport == "udp" else fakes.tcp_raw
    return await send((fake.host, fake.port), payload, timeout)


def query(
    name: str = "www.example.com.", rdtype: str = "A", **kwargs: object
) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]


def addresses(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rrset in msg.answer for rd in rrset]


# --- server basics ---------------------------------------------------------------------


async def test_default_answer_and_recording(fake: fakes.FakeUpstream, transport: str) -> None:
    """Default: A -> 192.0.2.1 TTL 300, other types -> empty NOERROR; queries are recorded."""
    a = await ask(fake, transport, query("www.example.com.", "A"))
    aaaa = await ask(fake, transport, query("www.example.com.", "AAAA"))

    assert a.rcode() == dns.rcode.NOERROR and addresses(a) == ["192.0.2.1"]
    assert a.answer[0].ttl == 300
    assert aaaa.rcode() == dns.rcode.NOERROR and aaaa.answer == []
    got = await fake.wait_for(2)
    assert [rx.transport for rx in got] == [transport, transport]
    assert got[0].message is not None and got[0].message.id == a.id
    assert got[0].source[0] == "127.0.0.1"
    assert fake.addr == f"127.0.0.1:{fake.port}"


async def test_unparsable_query_is_recorded_without_message(
    fake: fakes.FakeUpstream, transport: str
) -> None:
    fake.handler = lambda rx: b"\x12\x34pong"
    assert await raw(fake, transport, b"\x12\x34garbage") == b"\x12\x34pong"
    (rx,) = await fake.wait_for(1)
    assert rx.wire == b"\x12\x34garbage" and rx.message is None


async def test_async_handler_and_replacement(fake: fakes.FakeUpstream, transport: str) -> None:
    async def nxdomain(rx: fakes.Received) -> fakes.Response:
        assert rx.message is not None
        return fakes.reply(rx.message, rcode=dns.rcode.NXDOMAIN)

    assert (await ask(fake, transport, query())).rcode() == dns.rcode.NOERROR
    fake.handler = nxdomain
    assert (await ask(fake, transport, query())).rcode() == dns.rcode.NXDOMAIN


async def test_handler_error_is_recorded_and_not_answered(
    fake: fakes.FakeUpstream, transport: str
) -> None:
    def broken(rx: fakes.Received) -> fakes.Response:
        raise RuntimeError("boom")

    fake.handler = broken
    assert await raw(fake, transport, query().to_wire(), timeout=SILENCE) is None
    assert [str(e) for e in fake.errors] == ["boom"]


async def test_wait_for_wakes_on_arrival_and_times_out(fake: fakes.FakeUpstream) -> None:
    waiter = asyncio.ensure_future(fake.wait_for(1))
    await ask(fake, "udp", query())
    assert len(await waiter) == 1
    with pytest.raises(asyncio.TimeoutError):
        await fake.wait_for(2, timeout=0.01)


async def test_ipv6_host() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this host")
    async with fakes.FakeUpstream(host="::1") as fake:
        assert fake.addr == f"[::1]:{fake.port}"
        for transport in ("udp", "tcp"):
            assert addresses(await ask(fake, transport, query())) == ["192.0.2.1"]


# --- response types --------------------------------------------------------------------


async def test_message_reply(fake: fakes.FakeUpstream, transport: str) -> None:
    fake.handler = fakes.answers(
        {
            ("s3.example.com", "A"): [
                "CNAME s3.amazonaws.com.",
                "s3.amazonaws.com. A 52.219.1.1",
                "s3.amazonaws.com. A 52.219.1.2",
            ]
        }
    )
    r = await ask(fake, transport, query("s3.example.com.", "A"))
    assert [(str(rr.name), dns.rdatatype.to_text(rr.rdtype), len(rr)) for rr in r.answer] == [
        ("s3.example.com.", "CNAME", 1),
        ("s3.amazonaws.com.", "A", 2),
    ]


async def test_bytes_are_sent_raw(fake: fakes.FakeUpstream, transport: str) -> None:
    fake.handler = lambda rx: b"\xff\xffnot dns"
    assert await raw(fake, transport, query().to_wire()) == b"\xff\xffnot dns"


async def test_none_drops(fake: fakes.FakeUpstream, transport: str) -> None:
    fake.handler = lambda rx: None
    assert await raw(fake, transport, query().to_wire(), timeout=SILENCE) is None
    await fake.wait_for(1)


async def test_delay_replies_later(fake: fakes.FakeUpstream, transport: str) -> None:
    fake.handler = lambda rx: fakes.Delay(0.01, fakes.default_handler(rx))
    assert addresses(await ask(fake, transport, query())) == ["192.0.2.1"]


async def test_delay_does_not_block_other_udp_queries(fake: fakes.FakeUpstream) -> None:
    """A delayed UDP query does not hold up one sent after it."""

    def handler(rx: fakes.Received) -> fakes.Response:
        assert rx.message is not None
        answer = fakes.default_handler(rx)
        return fakes.Delay(60, answer) if str(rx.message.question[0].name) == "slow." else answer

    fake.handler = handler
    slow = asyncio.ensure_future(ask(fake, "udp", query("slow.")))
    await fake.wait_for(1)
    try:
        assert addresses(await ask(fake, "udp", query("fast."))) == ["192.0.2.1"]
        assert not slow.done()
    finally:
        slow.cancel()


async def test_tcp_pipelined_replies_out_of_order(fake: fakes.FakeUpstream) -> None:
    """Two queries on one connection: the delayed first one is answered after the second."""
    gate = asyncio.Event()

    async def handler(rx: fakes.Received) -> fakes.Response:
        assert rx.message is not None
        if str(rx.message.question[0].name) == "slow.":
            await gate.wait()
        return fakes.default_handler(rx)

    fake.handler = handler
    slow, fast = query("slow."), query("fast.")
    reader, writer = await asyncio.open_connection(fake.host, fake.port)
    try:
        for q in (slow, fast):
            wire = q.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
        ids = []
        for _ in range(2):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            ids.append(dns.message.from_wire(await reader.readexactly(length)).id)
            gate.set()  # release the slow one only after the fast one arrived
        assert ids == [fast.id, slow.id]
    finally:
        writer.close()


async def test_wrong_source_over_udp(fake: fakes.FakeUpstream) -> None:
    """dnspython sees the reply come from another port; ignoring it, it gets the real one."""
    fake.handler = lambda rx: fakes.WrongSource(fakes.default_handler(rx))
    with pytest.raises(dns.query.UnexpectedSource):
        await ask(fake, "udp", query())

    fake.handler = lambda rx: [
        fakes.WrongSource(fakes.reply(rx.message, "A 198.51.100.1")),
        fakes.default_handler(rx),
    ]
    r = await ask(fake, "udp", query(), ignore_unexpected=True)
    assert addresses(r) == ["192.0.2.1"]


async def test_wrong_source_over_tcp_never_reaches_connection(fake: fakes.FakeUpstream) -> None:
    fake.handler = lambda rx: [
        fakes.WrongSource(fakes.reply(rx.message, "A 198.51.100.1")),
        fakes.default_handler(rx),
    ]
    assert addresses(await ask(fake, "tcp", query())) == ["192.0.2.1"]


async def test_list_sends_each_in_order(fake: fakes.FakeUpstream, transport: str) -> None:
    """[spoof, real]: the raw client sees the spoof first, dnspython the real one."""
    spoof = b"\x00\x00" + b"\x81\x80" + b"\x00" * 8

    fake.handler = lambda rx: [spoof, fakes.default_handler(rx)]
    assert await raw(fake, transport, query().to_wire()) == spoof
    if transport == "udp":
        r = await ask(fake, "udp", query(), ignore_errors=True)
        assert addresses(r) == ["192.0.2.1"]


async def test_truncated(fake: fakes.FakeUpstream, transport: str) -> None:
    """UDP: empty reply with TC and the question; TCP: the default answer."""
    fake.handler = lambda rx: fakes.Truncated()
    q = query(use_edns=0, payload=1232)
    r = await ask(fake, transport, q)
    if transport == "udp":
        assert r.flags & dns.flags.TC and r.answer == [] and r.question == q.question
        assert r.edns == 0
    else:
        assert not r.flags & dns.flags.TC and addresses(r) == ["192.0.2.1"]


async def test_truncated_drives_udp_fallback_to_tcp(fake: fakes.FakeUpstream) -> None:
    fake.handler = lambda rx: fakes.Truncated()
    r, used_tcp = await dns.asyncquery.udp_with_fallback(
        query(), fake.host, port=fake.port, timeout=2.0
    )
    assert used_tcp and addresses(r) == ["192.0.2.1"]
    assert [rx.transport for rx in await fake.wait_for(2)] == ["udp", "tcp"]


async def test_close(fake: fakes.FakeUpstream, transport: str) -> None:
    """TCP: the connection closes unanswered; UDP: no reply."""
    fake.handler = lambda rx: fakes.Close()
    if transport == "tcp":
        with pytest.raises(EOFError):
            await ask(fake, "tcp", query())
    assert await raw(fake, transport, query().to_wire(), timeout=SILENCE) is None


async def test_bad_response_type_is_an_error(fake: fakes.FakeUpstream) -> None:
    fake.handler = lambda rx: 42  # type: ignore[arg-type, return-value]
    assert await raw(fake, "tcp", query().to_wire(), timeout=SILENCE) is None
    assert isinstance(fake.errors[0], TypeError)


# --- answer builders -------------------------------------------------------------------


def test_reply_builds_rrsets_and_sections() -> None:
    q = query("www.example.com.", "A", use_edns=0, payload=1400, want_dnssec=True)
    r = fakes.reply(
        q,
        "A 192.0.2.1",
        "A 192.0.2.2",
        "other.example. AAAA 2001:db8::1",
        ttl=60,
        authority=["example.com. NS ns1.example.com."],
        additional=["ns1.example.com. A 192.0.2.53"],
    )
    assert r.id == q.id and r.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rr in r.answer] == [
        "www.example.com. 60 IN A 192.0.2.1\nwww.example.com. 60 IN A 192.0.2.2",
        "other.example. 60 IN AAAA 2001:db8::1",
    ]
    assert r.authority[0].to_text() == "example.com. 60 IN NS ns1.example.com."
    assert r.additional[0].to_text() == "ns1.example.com. 60 IN A 192.0.2.53"
    assert r.edns == 0 and r.ednsflags & dns.flags.DO


def test_reply_rcode_and_no_edns() -> None:
    r = fakes.reply(query(), rcode=dns.rcode.SERVFAIL)
    assert r.rcode() == dns.rcode.SERVFAIL and r.edns == -1 and r.answer == []


def test_answers_maps_names_and_types() -> None:
    handle = fakes.answers(
        {
            ("WWW.Example.com.", "a"): ["A 192.0.2.7"],
            ("gone.example.com", "A"): dns.rcode.SERVFAIL,
        }
    )

    def run(name: str, rdtype: str = "A") -> dns.message.Message:
        q = query(name, rdtype)
        r = handle(fakes.Received("udp", q.to_wire(), q, ("127.0.0.1", 1)))
        assert isinstance(r, dns.message.Message)
        return r

    assert addresses(run("www.EXAMPLE.com.")) == ["192.0.2.7"]
    assert run("gone.example.com.").rcode() == dns.rcode.SERVFAIL
    assert run("www.example.com.", "AAAA").rcode() == dns.rcode.NXDOMAIN
    assert run("nope.example.com.").rcode() == dns.rcode.NXDOMAIN


async def test_stop_closes_open_connections_and_pending_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """stop() returns at once with a Delay pending on an open connection; asyncio logs nothing."""
    fake = await fakes.FakeUpstream(handler=lambda rx: fakes.Delay(60, None)).start()
    reader, writer = await asyncio.open_connection(fake.host, fake.port)
    wire = query().to_wire()
    writer.write(struct.pack("!H", len(wire)) + wire)
    await fake.wait_for(1)

    await fake.stop()

    assert await reader.read() == b""
    writer.close()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
