"""Graceful shutdown: stop accepting, answer the queries in flight within the deadline,
close TCP connections cleanly; SIGTERM and SIGINT do the same.

The real process (exit code 0 on SIGTERM with a query in flight) is tested in
test_reload.py, which starts it anyway.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from forwarder import config as config_mod
from forwarder.server import Server
from tests.conftest import forwarder_config, query
from tests.fakes import Delay, FakeUpstream, reply


def config(upstream: FakeUpstream, timeout: float = 1.0) -> dict[str, Any]:
    cfg = forwarder_config({"up": [upstream.addr]})
    cfg["upstreams"]["up"].update(timeout=timeout, attempts=1)
    return cfg


async def started(cfg: dict[str, Any]) -> Server:
    srv = Server(config_mod.from_data(cfg, "<test>"))
    await srv.start()
    return srv


async def tcp_open(srv: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = srv.address("tcp")
    return await asyncio.open_connection(host, port)


async def tcp_ask(writer: asyncio.StreamWriter, name: str) -> None:
    data = dns.message.make_query(name, "A").to_wire()
    writer.write(struct.pack("!H", len(data)) + data)
    await writer.drain()


async def tcp_answer(reader: asyncio.StreamReader) -> dns.message.Message:
    (length,) = struct.unpack("!H", await reader.readexactly(2))
    return dns.message.from_wire(await reader.readexactly(length))


async def test_stop_answers_queries_in_flight_then_closes(upstream: FakeUpstream) -> None:
    """Shutdown: a UDP and a TCP query wait on a 0.3 s upstream when stop() begins; both are
    answered, then the TCP connection is closed (EOF, no reset) and nothing more is
    accepted."""
    upstream.handler = lambda rx: Delay(0.3, reply(rx.message, "A 192.0.2.1"))
    srv = await started(config(upstream))
    try:
        udp_host, udp_port = srv.address("udp")
        over_udp = asyncio.ensure_future(query(srv, "udp", "udp.example.com"))
        reader, writer = await tcp_open(srv)
        await tcp_ask(writer, "tcp.example.com")
        await upstream.wait_for(2)
        stopping = asyncio.ensure_future(srv.stop(deadline=3.0))
        assert (await over_udp).rcode() == dns.rcode.NOERROR
        assert (await tcp_answer(reader)).rcode() == dns.rcode.NOERROR
        assert await reader.read() == b""  # closed cleanly after the answer
        writer.close()
        await stopping
    finally:
        await srv.stop()
    with pytest.raises(dns.exception.Timeout):
        await dns.asyncquery.udp(dns.message.make_query("late.example.com", "A"), udp_host,
                                 port=udp_port, timeout=0.3)
    with pytest.raises(OSError):
        await tcp_open(srv)


async def test_stop_answers_the_queries_queued_in_the_udp_socket(
        upstream: FakeUpstream) -> None:
    """Shutdown: 50 UDP queries that reached the socket before the stop began, none read
    yet (the loop had not run since), are all answered: from the cache and from the
    upstream."""
    srv = await started(config(upstream))
    clients: list[socket.socket] = []
    try:
        host, port = srv.address("udp")
        assert (await query(srv, "udp", "cached.example.com")).answer
        for i in range(50):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            name = "cached.example.com" if i % 2 else f"q{i}.example.com"
            sock.sendto(dns.message.make_query(name, "A").to_wire(), (host, port))
            clients.append(sock)
        await srv.stop(deadline=3.0)  # no await before it: nothing was read yet
        loop = asyncio.get_running_loop()
        answers = [dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 4096), 1))
                   for s in clients]
    finally:
        for sock in clients:
            sock.close()
        await srv.stop()
    assert all(a.rcode() == dns.rcode.NOERROR and a.answer for a in answers)


async def test_stop_gives_up_at_the_deadline(upstream: FakeUpstream) -> None:
    """Shutdown: a query stuck on a 5 s upstream does not hold stop() past its deadline."""
    upstream.handler = lambda rx: Delay(5.0, reply(rx.message, "A 192.0.2.1"))
    srv = await started(config(upstream, timeout=4.0))
    stuck = asyncio.ensure_future(query(srv, "udp", "stuck.example.com", timeout=0.8))
    await upstream.wait_for(1)
    began = time.monotonic()
    await srv.stop(deadline=0.3)
    assert time.monotonic() - began < 1.5
    with pytest.raises(dns.exception.Timeout):
        await stuck


async def test_idle_tcp_connection_is_closed_on_stop(upstream: FakeUpstream) -> None:
    srv = await started(config(upstream))
    reader, writer = await tcp_open(srv)
    await tcp_ask(writer, "www.example.com")
    assert (await tcp_answer(reader)).rcode() == dns.rcode.NOERROR
    await srv.stop(deadline=1.0)
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    writer.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_and_stops(upstream: FakeUpstream, signum: int) -> None:
    """Shutdown: SIGTERM / SIGINT with a query in flight: it is answered and the server
    stops (the signal goes to this process; the server's handler takes it)."""
    upstream.handler = lambda rx: Delay(0.3, reply(rx.message, "A 192.0.2.1"))
    srv = await started(config(upstream))
    loop = asyncio.get_running_loop()
    try:
        srv.install_signal_handlers()
        asked = asyncio.ensure_future(query(srv, "udp", "www.example.com"))
        await upstream.wait_for(1)
        os.kill(os.getpid(), signum)
        assert (await asked).rcode() == dns.rcode.NOERROR
        await asyncio.wait_for(srv.wait_stopped(), 3.0)
        assert not srv.listening
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await srv.stop()
