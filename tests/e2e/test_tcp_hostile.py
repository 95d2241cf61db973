"""Hostile TCP clients (RFC 7766 6.2, issue 14 items 2 and 3): a client that pipelines
queries and never reads is held to a bounded amount of unsent replies and dropped after
the idle timeout; a query must be complete within `tcp_frame_timeout` of its first byte
however slowly it trickles; one address holds at most `tcp_max_connections_per_client`
connections; a zero-length frame closes the connection; and a legitimate client is
answered while slowloris connections fill the table.

scripts/tcp_backpressure.py and scripts/tcp_slowloris.py measure the same on a real
process at full scale (50,000 queries; 1,000 connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from forwarder import metrics
from forwarder.listeners.tcp import WRITE_HIGH_WATER
from forwarder.server import Server
from tests.conftest import free_port, query, running
from tests.fakes import FakeUpstream
from tests.processes import forwarder_process
from tests.tcp_clients import Trickler, big_answer, gone, pipeline_without_reading, reset_or_closed


def config(upstream: FakeUpstream, **limits: Any) -> dict[str, Any]:
    return {
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"up": {"servers": [upstream.addr], "timeout": 1.0, "attempts": 1,
                             "health_check": {"enabled": False}}},
        "zones": [{"match": ".", "upstream": "up"}],
        "metrics": {"enabled": False},
        "limits": limits,
    }


def dropped(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_dropped_total",
                                             {"reason": reason}) or 0.0


async def connection_of(srv: Server, sock: socket.socket) -> Any:
    """The server's connection object for the client socket *sock*, once accepted."""
    port = sock.getsockname()[1]
    found: list[Any] = []

    def accepted() -> bool:
        found[:] = [c for c in srv.tcp[0].connections if c.client[1] == port]
        return bool(found)

    await until(accepted, 2.0)
    return found[0]


async def until(condition: Any, timeout: float) -> float:
    """Waits for *condition()* to hold; answers how long that took (fails past timeout)."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            pytest.fail(f"still not so after {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - began


# --- a client that never reads ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def never_reading(srv: Server, count: int,
                        timeout: float) -> AsyncIterator[tuple[socket.socket, Any]]:
    """A client that pipelines *count* queries for the cached 4 KB answer and reads
    nothing, and its connection on the server, once the server stopped reading it."""
    assert len((await query(srv, "tcp", "big.example", "TXT")).answer[0]) == 16  # cached
    host, port = srv.address("tcp")
    sock, _ = await pipeline_without_reading(host, port, "big.example", "TXT", count,
                                             timeout=timeout)
    try:
        conn = await connection_of(srv, sock)
        await until(lambda: not conn.reading, 2.0)
        yield sock, conn
    finally:
        sock.close()


@pytest.mark.both_loops
async def test_a_client_that_never_reads_holds_a_bounded_backlog(
        upstream: FakeUpstream) -> None:
    """Backpressure: 5,000 pipelined queries for a cached 4 KB answer, never read: the
    server stops reading once WRITE_HIGH_WATER bytes of replies wait (one reply more at
    most), and aborts the connection tcp_idle_timeout after the client stopped taking
    them."""
    upstream.handler = big_answer
    before = dropped("tcp_write_stalled")
    async with running(config(upstream, tcp_idle_timeout=0.5)) as srv, \
            never_reading(srv, 5_000, timeout=1.0) as (sock, conn):
        assert conn.transport.get_write_buffer_size() <= WRITE_HIGH_WATER + 4_500
        assert len(conn.buffer) < 300_000  # what one read brought, not the 5,000 queries
        took = await until(lambda: conn.transport is None, 3.0)
        assert took < 0.5 + 1.0
        assert await reset_or_closed(sock, 1.0)
    assert dropped("tcp_write_stalled") == before + 1


@pytest.mark.both_loops
async def test_a_slow_reader_is_served_in_full(upstream: FakeUpstream) -> None:
    """Backpressure: reading stops and resumes as the client takes the replies: a client
    that reads 3,000 pipelined 4 KB answers (12 MB, more than the socket buffers hold)
    only once the server stopped reading still gets every one."""
    upstream.handler = big_answer
    async with running(config(upstream, tcp_idle_timeout=2.0)) as srv, \
            never_reading(srv, 3_000, timeout=0.5) as (sock, _):
        reader, writer = await asyncio.open_connection(sock=sock)
        ids = set()
        for _ in range(3_000):
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 3), "big")
            ids.add(dns.message.from_wire(await reader.readexactly(length)).id)
        writer.close()
    assert ids == set(range(3_000))


# --- slowloris ----------------------------------------------------------------------------------


@pytest.mark.both_loops
async def test_a_frame_must_be_complete_by_its_deadline(upstream: FakeUpstream) -> None:
    """Slowloris: a query trickled one byte every 100 ms is dropped tcp_frame_timeout
    (0.3 s) after its first byte, although each byte came well within the idle timeout."""
    before = dropped("tcp_frame_timeout")
    async with running(config(upstream, tcp_frame_timeout=0.3, tcp_idle_timeout=5)) as srv:
        trickler = Trickler(*srv.address("tcp"), source="127.0.0.1", interval=0.1)
        began = time.monotonic()
        trickler.start()
        try:
            await until(lambda: trickler.dropped >= 1, 3.0)
        finally:
            await trickler.stop()
    assert 0.25 < time.monotonic() - began < 1.5
    assert dropped("tcp_frame_timeout") >= before + 1


@pytest.mark.both_loops
async def test_a_zero_length_frame_closes_the_connection(upstream: FakeUpstream) -> None:
    """A zero-length frame (no DNS message is empty) closes the connection at once."""
    before = dropped("tcp_zero_length_frame")
    async with running(config(upstream)) as srv:
        reader, writer = await asyncio.open_connection(*srv.address("tcp"))
        writer.write(b"\x00\x00")
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
    assert dropped("tcp_zero_length_frame") == before + 1


@pytest.mark.both_loops
async def test_one_address_holds_at_most_its_share(upstream: FakeUpstream) -> None:
    """tcp_max_connections_per_client 3: a fourth connection from 127.0.0.1 is refused,
    one from 127.0.0.2 is served."""
    before = dropped("tcp_per_client_limit")
    async with running(config(upstream, tcp_max_connections_per_client=3)) as srv:
        host, port = srv.address("tcp")
        loop = asyncio.get_running_loop()
        socks = []
        for source in ["127.0.0.1"] * 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((source, 0))
            await loop.sock_connect(sock, (host, port))
            socks.append(sock)
        try:
            assert await reset_or_closed(socks[3], 2.0)
            assert not any(gone(s) for s in socks[:3])
            q = dns.message.make_query("other.example", "A")
            r = await dns.asyncquery.tcp(q, host, port=port, source="127.0.0.2", timeout=2)
            assert r.rcode() == dns.rcode.NOERROR
        finally:
            for sock in socks:
                sock.close()
    assert dropped("tcp_per_client_limit") == before + 1


@pytest.mark.both_loops
async def test_a_client_is_answered_while_trickling_connections_fill_the_table(
        upstream: FakeUpstream) -> None:
    """Slowloris: 100 connections from 10 addresses trickle a byte every 200 ms into a
    table of 50: a legitimate TCP query is answered within 1 s, time after time."""
    cfg = config(upstream, tcp_max_connections=50, tcp_frame_timeout=1.0)
    async with running(cfg) as srv:
        host, port = srv.address("tcp")
        tricklers = [Trickler(host, port, f"127.0.1.{1 + i % 10}", interval=0.2)
                     for i in range(100)]
        for t in tricklers:
            t.start()
        try:
            await until(lambda: len(srv.tcp[0].connections) >= 50, 5.0)
            worst = 0.0
            for i in range(5):
                began = time.monotonic()
                q = dns.message.make_query(f"legit{i}.example", "A")
                r = await dns.asyncquery.tcp(q, host, port=port, timeout=1.0)
                worst = max(worst, time.monotonic() - began)
                assert r.rcode() == dns.rcode.NOERROR
                await asyncio.sleep(0.2)  # the tricklers move on meanwhile
        finally:
            for t in tricklers:
                await t.stop()
    assert worst < 1.0


# --- the real process: memory -------------------------------------------------------------------


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.mark.slow
async def test_a_never_reading_client_costs_the_process_little_memory(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """Process: 10,000 pipelined queries for a cached 4 KB answer that the client never
    reads raise the peak RSS of `forwarder run` by less than 10 MB (40 MB of answers were
    held before), and the connection is dropped within the idle timeout (1 s) plus 1 s."""
    upstream.handler = big_answer
    port, http = free_port(), free_port(socket.SOCK_STREAM)
    cfg = {**config(upstream, tcp_idle_timeout=1.0), "allow_root": True,
           "listen": [{"address": "127.0.0.1", "port": port}],
           "metrics": {"listen": f"127.0.0.1:{http}"}}
    async with forwarder_process(tmp_path, cfg) as fwd:
        for _ in range(3):  # warm up: the cache entry and the code paths
            assert (await fwd.ask("big.example", "TXT", transport="tcp")).answer
        rss = rss_kb(fwd.pid)
        sock, _ = await pipeline_without_reading("127.0.0.1", port, "big.example", "TXT",
                                                    10_000, timeout=2.0)
        try:
            began = time.monotonic()
            assert await reset_or_closed(sock, 1.0 + 2.0 + 1.0)
            closed_after = time.monotonic() - began
        finally:
            sock.close()
        growth_mb = (rss_kb(fwd.pid, "VmHWM") - rss) / 1024
        await fwd.poll(lambda: fwd.metric_is("forwarder_tcp_connections", 0))
        assert await fwd.stop() == 0
    assert growth_mb < 10, f"peak RSS grew {growth_mb:.1f} MB"
    assert closed_after < 1.0 + 2.0 + 1.0
