"""Encrypted upstreams end to end: a dnspython client asks the forwarder, which forwards
over DNS over TLS or DNS over HTTPS to in-test servers with certificates from a
throwaway CA. Connection reuse, pipelining, out-of-order replies, servers that close
connections, and every certificate and HTTP failure a user can meet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest

from forwarder import metrics
from tests.conftest import forwarder_config, query, running
from tests.fakes import Close, Delay, Received, Response, default_handler, reply
from tests.secure_fakes import FakeDoh, FakeDot, HttpStatus, Pki, Reset

# start_tls and SSL transports differ between uvloop and asyncio
pytestmark = pytest.mark.both_loops


@pytest.fixture
def pki(tmp_path: Any) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def dot(pki: Pki) -> AsyncIterator[FakeDot]:
    async with FakeDot(pki) as fake:
        yield fake


@pytest.fixture
async def doh(pki: Pki) -> AsyncIterator[FakeDoh]:
    async with FakeDoh(pki) as fake:
        yield fake


def secure_config(pki: Pki, transport: str, servers: list[str], tls: dict[str, Any] | None = None,
                  **group: Any) -> dict[str, Any]:
    cfg = forwarder_config({"g": servers})
    cfg["upstreams"]["g"].update(
        transport=transport, tls=tls or {"server_name": "dns.test", "ca_file": str(pki.ca_file)},
        **group)
    return cfg


def address(fake: FakeDot | FakeDoh) -> str:
    return fake.url if isinstance(fake, FakeDoh) else fake.addr


def ede_of(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


def connections(fake: FakeDot | FakeDoh, event: str) -> float:
    transport = "https" if isinstance(fake, FakeDoh) else "tls"
    return metrics.REGISTRY.get_sample_value("forwarder_upstream_connections_total", {
        "group": "g", "server": address(fake), "transport": transport, "event": event}) or 0.0


def errors(fake: FakeDot | FakeDoh, kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_upstream_errors_total", {
        "group": "g", "server": address(fake), "kind": kind}) or 0.0


@pytest.fixture(params=["tls", "https"])
async def server(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[FakeDot | FakeDoh]:
    """An encrypted upstream of each kind."""
    fake = FakeDot(pki) if request.param == "tls" else FakeDoh(pki)
    async with fake:
        yield fake


def transport_of(fake: FakeDot | FakeDoh) -> str:
    return "https" if isinstance(fake, FakeDoh) else "tls"


async def test_answers_over_one_verified_padded_connection(pki: Pki,
                                                           server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: two queries: both answered, over one connection (opened once, reused once),
    each padded to a multiple of 128 octets (RFC 8467), with the handshake timed."""
    cfg = secure_config(pki, transport_of(server), [address(server)])
    async with running(cfg) as srv:
        first = await query(srv, "udp", "one.example")
        second = await query(srv, "tcp", "two.example")
        handshakes = metrics.REGISTRY.get_sample_value(
            "forwarder_upstream_handshake_duration_seconds_count",
            {"group": "g", "server": address(server), "transport": transport_of(server)})
        opened, reused = connections(server, "opened"), connections(server, "reused")
    assert [rr.address for rr in first.answer[0]] == ["192.0.2.1"]
    assert [rr.address for rr in second.answer[0]] == ["192.0.2.1"]
    assert server.connections == 1
    assert (opened, reused, handshakes) == (1, 1, 1)
    for rx in server.received:
        assert len(rx.wire) % 128 == 0
        assert rx.message is not None
        assert any(o.otype == dns.edns.PADDING for o in rx.message.options)


async def test_doh_posts_dns_messages_with_id_zero(pki: Pki, doh: FakeDoh) -> None:
    """DoH: POST to the URL's path with content-type application/dns-message, DNS ID 0."""
    async with running(secure_config(pki, "https", [doh.url])) as srv:
        r = await query(srv, "udp", "post.example")
    assert r.rcode() == dns.rcode.NOERROR
    assert doh.requests == [("POST", "/dns-query", "application/dns-message")]
    assert doh.received[0].message is not None and doh.received[0].message.id == 0


async def test_doh_get_when_configured(pki: Pki, doh: FakeDoh) -> None:
    """DoH, method: get: the query travels base64url in ?dns=, and is answered."""
    async with running(secure_config(pki, "https", [doh.url], method="get")) as srv:
        r = await query(srv, "udp", "get.example")
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.1"]
    assert doh.requests[0][:2] == ("GET", "/dns-query")


async def test_pipelined_queries_answered_out_of_order(pki: Pki,
                                                       server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: a slow and a fast query in flight together on one connection: the fast
    reply comes back first and each client gets its own answer."""
    def handler(rx: Received) -> Response:
        assert rx.message is not None
        name = rx.message.question[0].name.to_text()
        answer = reply(rx.message, "A 192.0.2.7" if name.startswith("slow") else "A 192.0.2.8")
        return Delay(0.4, answer) if name.startswith("slow") else answer

    server.handler = handler
    order: list[str] = []
    async with running(secure_config(pki, transport_of(server), [address(server)],
                                     timeout=2.0)) as srv:
        await query(srv, "udp", "warm.example")  # the connection is open before the race

        async def ask(name: str) -> dns.message.Message:
            r = await query(srv, "udp", name)
            order.append(name)
            return r

        slow, fast = await asyncio.gather(ask("slow.example"), ask("fast.example"))
    assert order == ["fast.example", "slow.example"]
    assert [rr.address for rr in slow.answer[0]] == ["192.0.2.7"]
    assert [rr.address for rr in fast.answer[0]] == ["192.0.2.8"]
    assert server.connections == 1


async def test_server_closing_idle_connection_is_reopened(pki: Pki,
                                                          server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: the server closes the connection between queries: the next query opens a
    new one and is answered."""
    async with running(secure_config(pki, transport_of(server), [address(server)])) as srv:
        await query(srv, "udp", "before.example")
        server.close_connections()
        r = await query(srv, "udp", "after.example")
    assert r.rcode() == dns.rcode.NOERROR
    assert server.connections == 2


async def test_idle_connection_closed_after_idle_timeout(pki: Pki, dot: FakeDot) -> None:
    """DoT, idle_timeout 0.1s: the forwarder closes the connection it no longer uses."""
    async with running(secure_config(pki, "tls", [dot.addr], idle_timeout=0.1)) as srv:
        await query(srv, "udp", "idle.example")
        link = srv.runtime.groups["g"].links[dot.addr]
        channel = link.channel  # type: ignore[attr-defined]
        assert channel is not None
        async with asyncio.timeout(2):
            while not channel.closed:
                await asyncio.sleep(0.02)  # poll: the idle timer is the forwarder's own
        r = await query(srv, "udp", "again.example")
    assert r.rcode() == dns.rcode.NOERROR
    assert dot.connections == 2


async def test_connection_cut_mid_stream_is_retried_on_a_new_one(
        pki: Pki, server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: the server ends a reused connection with a query pending (DoH: GOAWAY
    first): the query is sent once more on a new connection (RFC 7766 6.2.1) and
    answered."""
    cut = []

    def handler(rx: Received) -> Response:
        assert rx.message is not None
        if rx.message.question[0].name.to_text() == "cut.example." and not cut:
            cut.append(rx)
            return Close()
        return default_handler(rx)

    server.handler = handler
    async with running(secure_config(pki, transport_of(server), [address(server)])) as srv:
        await query(srv, "udp", "warm.example")
        r = await query(srv, "udp", "cut.example")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(cut) == 1 and server.connections == 2


async def test_doh_stream_reset_fails_over(pki: Pki, doh: FakeDoh, dot: FakeDot) -> None:
    """DoH: the first server resets the request's stream: the second one answers; the
    reset is counted as an http error of the first."""
    doh.handler = lambda rx: Reset()
    doh2 = FakeDoh(pki)
    async with doh2, running(secure_config(pki, "https", [doh.url, doh2.url])) as srv:
        r = await query(srv, "udp", "reset.example")
        counted = errors(doh, "http")
    assert r.rcode() == dns.rcode.NOERROR
    assert counted == 1


@pytest.mark.parametrize("status", [404, 503])
async def test_doh_http_error_is_servfail_naming_the_status(pki: Pki, doh: FakeDoh,
                                                           status: int) -> None:
    """DoH: the server answers HTTP 4xx/5xx: SERVFAIL, EDE 23 naming the URL and status,
    counted as http_status."""
    doh.handler = lambda rx: HttpStatus(status)
    async with running(secure_config(pki, "https", [doh.url], attempts=1)) as srv:
        r = await query(srv, "udp", "status.example", use_edns=0)
        counted = errors(doh, "http_status")
    assert r.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(r)
    assert code == 23
    assert f"{doh.url} answered HTTP {status}" in text
    assert counted == 1


def wrong_name(pki: Pki) -> dict[str, Any]:
    return {"cert": pki.wrong_name}


CERT_FAILURES = {
    # case: (server certificate, tls settings, the reason the client reads, metric kind)
    "wrong name": ("wrong_name", None, "certificate for 127.0.0.1 does not match dns.test",
                   "certificate"),
    "unknown CA": ("unknown", None, "certificate of 127.0.0.1 is not signed by a CA trusted "
                   "by tls.ca_file", "certificate"),
    "pin mismatch": ("cert", {"pins": "other"}, "certificate of 127.0.0.1 matches none of "
                     "the pinned keys", "pin"),
}


@pytest.mark.parametrize("transport", ["tls", "https"])
@pytest.mark.parametrize("case", list(CERT_FAILURES))
async def test_certificate_failures_are_servfail_naming_server_and_reason(
        pki: Pki, transport: str, case: str) -> None:
    """DoT/DoH: a certificate for another name, from an unknown CA, or whose key matches
    no pin: SERVFAIL with EDE 23 naming the server and the reason; counted by server
    and reason; the connection counted as failed."""
    cert_name, extra, reason, kind = CERT_FAILURES[case]
    cert = getattr(pki, cert_name)
    tls: dict[str, Any] = {"server_name": "dns.test", "ca_file": str(pki.ca_file)}
    if extra is not None:
        tls["pins"] = [pki.pin(pki.wrong_name)]
    fake = FakeDot(pki, cert=cert) if transport == "tls" else FakeDoh(pki, cert=cert)
    async with fake, running(secure_config(pki, transport, [address(fake)], tls=tls,
                                           attempts=1)) as srv:
        r = await query(srv, "udp", "cert.example", use_edns=0)
        counted, failed = errors(fake, kind), connections(fake, "failed")
    assert r.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(r)
    assert code == 23
    assert reason in text
    assert (counted, failed) == (1, 1)
    assert not fake.received


async def test_matching_pin_is_accepted(pki: Pki, dot: FakeDot) -> None:
    """DoT with the server's own key pinned (and one other): answered."""
    tls = {"server_name": "dns.test", "ca_file": str(pki.ca_file),
           "pins": [pki.pin(pki.wrong_name), pki.pin()]}
    async with running(secure_config(pki, "tls", [dot.addr], tls=tls)) as srv:
        r = await query(srv, "udp", "pinned.example")
    assert r.rcode() == dns.rcode.NOERROR


async def test_handshake_timeout_is_servfail_with_ede_22(pki: Pki,
                                                        server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: the server accepts TCP but never completes TLS: SERVFAIL, EDE 22 saying
    the handshake timed out; counted as handshake_timeout."""
    server.stall_handshake = True
    cfg = secure_config(pki, transport_of(server), [address(server)], attempts=1, timeout=0.3)
    async with running(cfg) as srv:
        r = await query(srv, "udp", "stall.example", use_edns=0)
        counted = errors(server, "handshake_timeout")
    assert r.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(r)
    assert code == 22
    assert "TLS handshake with 127.0.0.1 timed out" in text
    assert counted == 1


async def test_bad_certificate_fails_over_to_the_next_server(pki: Pki, dot: FakeDot) -> None:
    """DoT, sequential: the first server's certificate names another host: the second
    server answers."""
    bad = FakeDot(pki, cert=pki.wrong_name)
    async with bad, running(secure_config(pki, "tls", [bad.addr, dot.addr])) as srv:
        r = await query(srv, "udp", "failover.example")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(dot.received) == 1


async def test_insecure_skip_verify_accepts_any_certificate_and_warns(
        pki: Pki, caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    """DoT, insecure_skip_verify: a certificate from an unknown CA is accepted, and a
    warning is logged at start and again at each reload."""
    import yaml

    fake = FakeDot(pki, cert=pki.unknown)
    cfg = secure_config(pki, "tls", [], tls={"insecure_skip_verify": True})
    path = tmp_path / "forwarder.yaml"
    caplog.set_level(logging.WARNING, logger="forwarder")
    async with fake:
        cfg["upstreams"]["g"]["servers"] = [fake.addr]
        path.write_text(yaml.safe_dump(cfg))
        async with running(cfg, str(path)) as srv:
            r = await query(srv, "udp", "insecure.example")
            assert await srv.reload()
    assert r.rcode() == dns.rcode.NOERROR
    warnings = [rec for rec in caplog.records if "insecure_skip_verify" in rec.getMessage()]
    assert len(warnings) == 2
    assert "NOT verified" in warnings[0].getMessage()


async def test_failed_connection_is_retried_after_a_backoff(
        pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """DoT: after a failed handshake the server is not tried again before the backoff
    (the next query fails at once, saying when the next try is); once it passes, a new
    connection is made, and with the certificate fixed the query is answered."""
    from forwarder.upstream.transports import secure

    monkeypatch.setattr(secure, "BACKOFF_FIRST", 0.5)
    fake = FakeDot(pki, cert=pki.wrong_name)
    async with fake, running(secure_config(pki, "tls", [fake.addr], attempts=1)) as srv:
        first = await query(srv, "udp", "one.example", use_edns=0)
        second = await query(srv, "udp", "two.example", use_edns=0)
        tried = fake.attempts
        fake.ctx = pki.server_context()  # the server gets the right certificate
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while (r := await query(srv, "udp", "three.example")).rcode() != dns.rcode.NOERROR:
            assert loop.time() < deadline, "never reconnected"
            await asyncio.sleep(0.05)  # poll: the backoff is the forwarder's own timer
    assert first.rcode() == second.rcode() == dns.rcode.SERVFAIL
    assert tried == 1
    assert "(next try in" in ede_of(second)[0][1]
    assert fake.attempts == 2 and r.rcode() == dns.rcode.NOERROR



async def test_connection_that_went_silent_is_replaced(pki: Pki,
                                                       server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: the open connection stops answering (a middlebox forgot the flow, the
    server wedged it) while new connections work: the query that waited on it in vain
    fails, and the next one goes over a new connection and is answered."""
    cfg = secure_config(pki, transport_of(server), [address(server)], attempts=1, timeout=0.3)
    cfg["cache"] = {"enabled": False}
    async with running(cfg) as srv:
        await query(srv, "udp", "warm.example")
        dead = server.received[0].source

        def handler(rx: Received) -> Response:
            return None if rx.source == dead else default_handler(rx)

        server.handler = handler
        lost = await query(srv, "udp", "lost.example")
        after = await query(srv, "udp", "after.example")
    assert lost.rcode() == dns.rcode.SERVFAIL
    assert after.rcode() == dns.rcode.NOERROR
    assert server.connections == 2


async def test_doh_connection_out_of_stream_ids_is_replaced(pki: Pki, doh: FakeDoh) -> None:
    """DoH: a connection that has used up its HTTP/2 stream IDs (2^30 requests, about a
    day at 10,000 queries a second) takes no more requests: the next query goes over a
    new connection and is answered, and so are the ones after it."""
    cfg = secure_config(pki, "https", [doh.url])
    cfg["cache"] = {"enabled": False}
    async with running(cfg) as srv:
        await query(srv, "udp", "warm.example")
        channel = srv.runtime.groups["g"].links[doh.url].channel  # type: ignore[attr-defined]
        channel.h2.highest_outbound_stream_id = 2**31 - 1  # the last stream ID was used
        first = await query(srv, "udp", "first.example")
        second = await query(srv, "udp", "second.example")
    assert first.rcode() == second.rcode() == dns.rcode.NOERROR
    assert doh.connections == 2


@pytest.mark.parametrize("size", [65_536, 100_000])
async def test_doh_reply_too_long_for_dns_fails_only_its_query(pki: Pki, doh: FakeDoh,
                                                              size: int) -> None:
    """DoH: the server sends a body longer than any DNS message (its last frame, or one
    before it, goes past 65,535 octets) while another query waits on the same
    connection: that query fails (SERVFAIL, EDE 23 saying why, an http error of the
    server); the other is answered on the same connection."""
    def handler(rx: Received) -> Response:
        assert rx.message is not None
        name = rx.message.question[0].name.to_text()
        if name == "big.example.":
            return bytes(size)
        if name == "slow.example.":
            return Delay(0.3, default_handler(rx))
        return default_handler(rx)

    doh.handler = handler
    cfg = secure_config(pki, "https", [doh.url], attempts=1, timeout=2.0)
    cfg["cache"] = {"enabled": False}
    async with running(cfg) as srv:
        await query(srv, "udp", "warm.example")
        slow = asyncio.ensure_future(query(srv, "udp", "slow.example"))
        await doh.wait_for(2)
        big = await query(srv, "udp", "big.example", use_edns=0)
        other = await slow
        counted = errors(doh, "http")
    assert big.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(big)
    assert code == 23 and "sent more than a DNS message can hold" in text
    assert other.rcode() == dns.rcode.NOERROR
    assert doh.connections == 1 and counted == 1


async def test_slow_first_answer_on_a_new_connection_keeps_it(pki: Pki,
                                                              server: FakeDot | FakeDoh) -> None:
    """DoT/DoH: the first query on a new connection times out (a slow handshake can leave
    it little time): the connection is kept, and the next query is answered over it, so
    a handshake that takes most of the timeout does not open a connection per query."""
    slow = []

    def handler(rx: Received) -> Response:
        if not slow:
            slow.append(rx)
            return Delay(0.5, default_handler(rx))
        return default_handler(rx)

    server.handler = handler
    cfg = secure_config(pki, transport_of(server), [address(server)], attempts=1, timeout=0.3)
    cfg["cache"] = {"enabled": False}
    async with running(cfg) as srv:
        first = await query(srv, "udp", "first.example")
        second = await query(srv, "udp", "second.example")
    assert first.rcode() == dns.rcode.SERVFAIL
    assert second.rcode() == dns.rcode.NOERROR
    assert server.connections == 1
