"""Metrics end to end: known traffic moves each counter by exactly what was sent, read both
from the registry and from a scrape of /metrics; and the HTTP endpoint itself.

Counters are process-wide, so every test compares before and after its own traffic.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import metrics
from tests.conftest import (
    Samples,
    dump,
    forwarder_config,
    http_get,
    query,
    running,
    sample,
    scrape,
)
from tests.fakes import FakeUpstream, Received, reply, udp_raw

METRICS_ON = {"enabled": True, "listen": "127.0.0.1:0"}


def config(upstream: FakeUpstream, rule: str, timeout: float = 2.0,
           **extra: Any) -> dict[str, Any]:
    """One group `g` of *upstream*; the per-try timeout is long enough that a loaded machine
    does not turn one query into two (which would move the upstream counters)."""
    cfg = forwarder_config({"g": [upstream.addr]},
                           zones=[{"match": ".", "upstream": "g", "name": rule}],
                           metrics=METRICS_ON, **extra)
    cfg["upstreams"]["g"]["timeout"] = timeout
    return cfg


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


def by_name(rx: Received) -> dns.message.Message:
    """A for a*.example, AAAA for aaaa.example, NXDOMAIN for everything else."""
    assert rx.message is not None
    q = rx.message.question[0]
    name = q.name.to_text()
    if name.startswith("a") and q.rdtype == dns.rdatatype.A:
        return reply(rx.message, "A 192.0.2.1")
    if name.startswith("aaaa.") and q.rdtype == dns.rdatatype.AAAA:
        return reply(rx.message, "AAAA 2001:db8::1")
    return reply(rx.message, rcode=dns.rcode.NXDOMAIN)


async def test_query_counters_move_by_exactly_the_traffic_sent(
        upstream: FakeUpstream, transport: str) -> None:
    """Metrics: 3 A + 1 AAAA answered, 1 SPF (folded to `other`) and 1 A NXDOMAIN; expect
    those exact deltas in queries, responses, latency counts and upstream queries."""
    upstream.handler = by_name
    rule = f"metrics-{transport}"
    async with running(config(upstream, rule)) as srv:
        server = upstream.addr
        registry_before = {
            "a": value("forwarder_queries_total", protocol=transport, rule=rule, qtype="A"),
            "up": value("forwarder_upstream_queries_total", group="g", server=server,
                        transport="udp"),
        }
        before = await scrape(srv)
        for name in ("a1.example", "a2.example", "a3.example"):
            await query(srv, transport, name, "A")
        await query(srv, transport, "aaaa.example", "AAAA")
        await query(srv, transport, "a1.example", "SPF")
        await query(srv, transport, "nx.example", "A")
        after = await scrape(srv)

        labels = {"protocol": transport, "rule": rule}
        assert delta(before, after, "forwarder_queries_total", **labels, qtype="A") == 4
        assert delta(before, after, "forwarder_queries_total", **labels, qtype="AAAA") == 1
        assert delta(before, after, "forwarder_queries_total", **labels, qtype="other") == 1
        assert delta(before, after, "forwarder_responses_total", **labels, rcode="NOERROR") == 4
        assert delta(before, after, "forwarder_responses_total", **labels, rcode="NXDOMAIN") == 2
        assert delta(before, after, "forwarder_request_duration_seconds_count", **labels) == 6
        up = {"group": "g", "server": server}
        assert delta(before, after, "forwarder_upstream_queries_total", **up,
                     transport="udp") == 6
        assert delta(before, after, "forwarder_upstream_duration_seconds_count", **up) == 6
        assert sample(after, "forwarder_inflight_queries") == 0
        # the registry agrees with what was scraped
        assert value("forwarder_queries_total", **labels, qtype="A") - registry_before["a"] == 4
        assert value("forwarder_upstream_queries_total", **up, transport="udp") \
            - registry_before["up"] == 6


def silent(rx: Received) -> None:
    return None


@pytest.mark.parametrize(("kind", "handler"), [
    ("timeout", silent),
    ("servfail", lambda rx: reply(rx.message, rcode=dns.rcode.SERVFAIL)),
    ("refused", lambda rx: reply(rx.message, rcode=dns.rcode.REFUSED)),
])
async def test_upstream_errors_are_counted_by_kind(upstream: FakeUpstream, kind: str,
                                                   handler: Any) -> None:
    """Metrics: a group of one server, 2 attempts; each failed try counts once by kind and
    the client gets one SERVFAIL (the upstream's own rcode for servfail/refused)."""
    upstream.handler = handler
    rule = f"errors-{kind}"
    async with running(config(upstream, rule, timeout=0.2)) as srv:
        before = await scrape(srv)
        response = await query(srv, "udp", "fail.example")
        after = await scrape(srv)
    assert upstream.received and len(upstream.received) == 2
    assert delta(before, after, "forwarder_upstream_errors_total", group="g",
                 server=upstream.addr, kind=kind) == 2
    rcode = dns.rcode.to_text(response.rcode())
    assert delta(before, after, "forwarder_responses_total", protocol="udp", rule=rule,
                 rcode=rcode) == 1


async def test_acl_refusals_are_counted(upstream: FakeUpstream, transport: str) -> None:
    """Metrics: a client outside acl.allow is refused, counted once, and nothing goes upstream."""
    async with running(config(upstream, "acl", acl={"allow": ["10.0.0.0/8"]})) as srv:
        before = await scrape(srv)
        response = await query(srv, transport, "example.com")
        after = await scrape(srv)
    assert response.rcode() == dns.rcode.REFUSED
    assert upstream.received == []
    assert delta(before, after, "forwarder_acl_refused_total") == 1
    assert delta(before, after, "forwarder_responses_total", protocol=transport, rule="none",
                 rcode="REFUSED") == 1


async def test_malformed_messages_are_counted_by_kind(upstream: FakeUpstream) -> None:
    """Metrics: a 2-byte datagram is dropped (`short`), a two-question query gets FORMERR
    (`qdcount`); neither reaches the upstream."""
    two_questions = struct.pack("!6H", 0x1234, 0x0100, 2, 0, 0, 0) + \
        (b"\x07example\x03com\x00" + struct.pack("!HH", 1, 1)) * 2
    async with running(config(upstream, "malformed")) as srv:
        before = await scrape(srv)
        assert await udp_raw(srv.address("udp"), b"\x12\x34", timeout=0.3) is None
        formerr = await udp_raw(srv.address("udp"), two_questions)
        after = await scrape(srv)
    assert formerr is not None and formerr[3] & 0xF == dns.rcode.FORMERR
    assert delta(before, after, "forwarder_malformed_total", kind="short") == 1
    assert delta(before, after, "forwarder_malformed_total", kind="qdcount") == 1
    assert upstream.received == []


async def test_inflight_and_tcp_connection_gauges(upstream: FakeUpstream) -> None:
    """Metrics: while the upstream holds a query, it is in flight; an open client TCP
    connection is counted until it closes."""
    release = asyncio.Event()

    async def held(rx: Received) -> dns.message.Message:
        await release.wait()
        return reply(rx.message, "A 192.0.2.1")

    upstream.handler = held
    cfg = config(upstream, "gauges", timeout=10.0)
    cfg["upstreams"]["g"]["attempts"] = 1  # no retry while it is held
    async with running(cfg) as srv:
        inflight = value("forwarder_inflight_queries")
        tcp_open = value("forwarder_tcp_connections")
        # held until release, so the client's timeout only has to outlast the scrapes below:
        # on a loaded machine they can take longer than the default 3 s
        pending = asyncio.ensure_future(query(srv, "udp", "held.example", timeout=30.0))
        await upstream.wait_for(1)
        scraped = await scrape(srv)
        assert sample(scraped, "forwarder_inflight_queries") == inflight + 1

        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        wire = dns.message.make_query("held.example", "TXT").to_wire()
        writer.write(struct.pack("!H", len(wire)) + wire)
        await upstream.wait_for(2)  # the connection is up and its query in flight
        assert value("forwarder_tcp_connections") == tcp_open + 1
        assert value("forwarder_inflight_queries") == inflight + 2
        release.set()
        await pending
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        await reader.readexactly(length)
        assert value("forwarder_inflight_queries") == inflight
        writer.close()
        await writer.wait_closed()


async def test_reloads_are_counted_by_result(upstream: FakeUpstream, tmp_path: Any) -> None:
    """Metrics: a good reload counts `success` and moves the timestamp; a bad one counts
    `failure` and leaves the timestamp alone."""
    cfg = config(upstream, "reload")
    path = tmp_path / "forwarder.yaml"
    path.write_text(dump(cfg))
    async with running(cfg, str(path)) as srv:
        before = await scrape(srv)
        assert await srv.reload()
        middle = await scrape(srv)
        path.write_text("zones: [{match: ., upstream: nowhere}]\n")
        assert not await srv.reload()
        after = await scrape(srv)
    assert delta(before, middle, "forwarder_config_reloads_total", result="success") == 1
    assert delta(before, middle, "forwarder_config_reloads_total", result="failure") == 0
    stamp = "forwarder_config_last_reload_success_timestamp_seconds"
    assert sample(middle, stamp) >= sample(before, stamp) > 0
    assert delta(middle, after, "forwarder_config_reloads_total", result="failure") == 1
    assert sample(after, stamp) == sample(middle, stamp)


async def test_scrape_has_build_info_and_declared_families(upstream: FakeUpstream) -> None:
    async with running(config(upstream, "build")) as srv:
        response = await http_get(srv, "/metrics")
    text = response.body.decode()
    assert response.headers["content-type"].startswith("text/plain")
    assert 'forwarder_build_info{python="' in text and 'version="' in text
    assert "# TYPE forwarder_upstream_healthy gauge" in text
    assert "_created" not in text


async def test_openmetrics_is_served_when_asked_for(upstream: FakeUpstream) -> None:
    request = (b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
               b"Accept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    async with running(config(upstream, "om")) as srv:
        response = await http_get(srv, "/metrics", raw=request)
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.endswith(b"# EOF\n")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /metrics?name[]=forwarder_queries_total HTTP/1.1\r\n\r\n", 200),
    (b"GET /nothing-here HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"nonsense\r\n\r\n", 400),
    (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 431),
])
async def test_http_answers(upstream: FakeUpstream, request_bytes: bytes, status: int) -> None:
    async with running(config(upstream, "http")) as srv:
        response = await http_get(srv, "", raw=request_bytes)
        assert response.status == status
        assert response.headers["connection"] == "close"
        assert int(response.headers["content-length"]) == len(response.body)
        # the endpoint keeps serving after any of these
        assert (await http_get(srv, "/healthz")).body == b"ok\n"


async def test_head_gets_headers_without_a_body(upstream: FakeUpstream) -> None:
    async with running(config(upstream, "head")) as srv:
        response = await http_get(srv, "/metrics", method="HEAD")
    assert response.status == 200
    assert int(response.headers["content-length"]) > 0
    assert response.body == b""


async def test_no_http_listener_when_metrics_are_disabled(upstream: FakeUpstream) -> None:
    async with running(forwarder_config({"g": [upstream.addr]})) as srv:
        assert srv.http_address is None


async def raw_exchange(srv: Any, payload: bytes, close_write: bool) -> bytes:
    """Sends *payload* to the HTTP endpoint (then ends the sending side, if asked) and
    answers everything it sends back before closing."""
    reader, writer = await asyncio.open_connection(*srv.http_address)
    writer.write(payload)
    if close_write:
        writer.write_eof()
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_request_cut_short_gets_400(upstream: FakeUpstream) -> None:
    """A client that sends part of a request head and stops sending gets 400; one that
    connects and sends nothing gets no answer; the endpoint keeps serving."""
    async with running(config(upstream, "cut")) as srv:
        cut = await raw_exchange(srv, b"GET /metrics HTTP/1.1\r\nHost:", close_write=True)
        silent = await raw_exchange(srv, b"", close_write=True)
        assert (await http_get(srv, "/healthz")).body == b"ok\n"
    assert cut.startswith(b"HTTP/1.1 400 ") and cut.endswith(b"incomplete request\n")
    assert silent == b""


async def test_a_request_head_too_slow_gets_408(upstream: FakeUpstream,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A request head not complete within the read timeout (shortened here) gets 408."""
    from forwarder.listeners import http

    monkeypatch.setattr(http, "READ_TIMEOUT", 0.2)
    async with running(config(upstream, "slow")) as srv:
        slow = await raw_exchange(srv, b"GET /metrics HTTP/1.1\r\n", close_write=False)
    assert slow.startswith(b"HTTP/1.1 408 ")
