"""Hostile TCP clients for tests and for the measurement scripts (scripts/tcp_*.py): one
that pipelines queries and never reads an answer, and slowloris connections that trickle
a query a byte at a time. Loopback only; every loop is bounded in time and count."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

import dns.message

from tests.fakes import Received, Response, Truncated, reply

# a ~4 KB answer: 16 TXT records of 250 bytes
BIG_TXT = [f'TXT "{i:02d}{"x" * 248}"' for i in range(16)]


def big_answer(rx: Received) -> Response:
    """A FakeUpstream handler: the 4 KB answer over TCP; over UDP a truncated reply sends
    the forwarder there."""
    if rx.transport == "udp":
        return Truncated()
    return reply(rx.message, *BIG_TXT).to_wire(max_size=65535)  # past the query's EDNS size


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def query_frames(name: str, qtype: str, count: int) -> bytes:
    """*count* framed queries for *name*, each with its own ID."""
    wire = bytearray(dns.message.make_query(name, qtype).to_wire())
    out = bytearray()
    for i in range(count):
        wire[0:2] = struct.pack("!H", i & 0xFFFF)
        out += frame(bytes(wire))
    return bytes(out)


async def pipeline_without_reading(host: str, port: int, name: str, qtype: str, count: int,
                                   source: str = "127.0.0.1",
                                   timeout: float = 10.0) -> tuple[socket.socket, int]:
    """Connects with a small receive buffer and writes *count* queries without ever
    reading; answers the socket (still open, for the caller to watch) and the bytes the
    server took before *timeout* (it stops reading when it holds back answers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((source, 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, port))
    data = memoryview(query_frames(name, qtype, count))
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(data[sent : sent + 65536])
        except BlockingIOError:
            await asyncio.sleep(0.01)  # the server's and our buffers are full: it stopped
    return sock, sent


def gone(sock: socket.socket) -> bool:
    """Answers whether the server closed or reset *sock*, without reading what it sent
    (SO_ERROR and a one-byte peek tell)."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def reset_or_closed(sock: socket.socket, timeout: float) -> bool:
    """Waits up to *timeout* seconds for `gone(sock)`."""
    deadline = time.monotonic() + timeout
    while not gone(sock):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


class Trickler:
    """A slowloris connection: sends a query one byte per *interval*, reconnecting when
    the server drops it, until stopped. Counts how often it was dropped."""

    def __init__(self, host: str, port: int, source: str, interval: float = 1.0) -> None:
        self.host, self.port, self.source, self.interval = host, port, source, interval
        self.connects = 0
        self.dropped = 0
        self.open = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._frame = frame(dns.message.make_query("slow.example", "A").to_wire())

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((self.source, 0))
                await loop.sock_connect(sock, (self.host, self.port))
                self.connects += 1
                self.open = True
                for byte in self._frame[:-1]:  # never the last byte
                    await loop.sock_sendall(sock, bytes([byte]))
                    await asyncio.sleep(self.interval)
                    if gone(sock):
                        break
                else:
                    while not await reset_or_closed(sock, self.interval):
                        pass
            except OSError:
                await asyncio.sleep(self.interval)  # refused: try again later
            finally:
                if self.open and not self._stopping:
                    self.dropped += 1
                self.open = False
                sock.close()
