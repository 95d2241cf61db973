"""UDP exchange with one upstream server: `UdpPool` (shared, rotated sockets with an ID
table) for queries, and `exchange` (a fresh socket each time) for health probes. Sockets
are connected to the server, so only its address and port can answer; the ID and question
are checked too."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable

from forwarder import wire


async def exchange(
    host: str, port: int, query: bytes, ident: int, qname: bytes, qtype: int, qclass: int,
    timeout: float, on_mismatch: Callable[[], None],
) -> bytes:
    """Sends *query* and answers the first matching reply.

    Raises:
        TimeoutError: nothing matching arrived within *timeout*.
        OSError: the network refused (e.g. ICMP port unreachable: ConnectionRefusedError).
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((host, port))
        sock.send(query)
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(sock, 65_535)
                if wire.reply_matches(data, ident, qname, qtype, qclass):
                    return data
                on_mismatch()
    finally:
        sock.close()


POOL_SOCKETS = 8  # sockets per upstream server, each from its own random source port
SOCKET_USES = 200  # queries a socket carries before it is replaced by one on a new port
SOCKET_AGE = 5.0  # seconds a socket is used before it is replaced, however few its queries


class _PooledSocket:
    """One connected UDP socket of a pool and the queries waiting on it, by ID."""

    __slots__ = ("closed", "expires", "pending", "retired", "sock", "uses")

    def __init__(self, sock: socket.socket, expires: float) -> None:
        self.sock = sock
        self.expires = expires
        self.pending: dict[int, tuple[asyncio.Future[bytes], bytes, int, int,
                                      Callable[[], None]]] = {}
        self.uses = 0
        self.retired = False
        self.closed = False


class UdpPool:
    """Upstream UDP to one server over a few shared sockets with an ID table.

    A fresh socket per query costs a file descriptor and an event-loop registration each
    time, which dominated the cache-miss path. Instead each server gets POOL_SOCKETS
    connected sockets (so only the server's address and port can answer), each bound by
    the kernel to a random ephemeral port and replaced by a new one after SOCKET_USES
    queries or SOCKET_AGE seconds, so source ports keep changing. Each query takes a random
    ID not in flight on its socket; a reply is accepted only if its ID and question match a
    waiting query.
    """

    def __init__(self, host: str, port: int, on_stray: Callable[[], None] = lambda: None):
        self.host = host
        self.port = port
        self.on_stray = on_stray  # a reply no query waits for (late, or spoofed)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sockets: list[_PooledSocket] = []
        self.closed = False

    async def exchange(self, query: bytes, qname: bytes, qtype: int, qclass: int,
                       timeout: float, on_mismatch: Callable[[], None]) -> bytes:
        """Sends *query* (its ID is replaced) and answers the first matching reply.

        Raises:
            TimeoutError: nothing matching arrived within *timeout*.
            OSError: the socket failed, or the network refused (ICMP unreachable).
        """
        loop = asyncio.get_running_loop()
        slot = self._socket(loop)
        pending = slot.pending
        ident = secrets.randbits(16)
        while ident in pending:
            ident = secrets.randbits(16)
        future: asyncio.Future[bytes] = loop.create_future()
        pending[ident] = (future, qname, qtype, qclass, on_mismatch)
        timer = loop.call_later(timeout, _expire, future)
        try:
            slot.sock.send(ident.to_bytes(2, "big") + query[2:])
            return await future
        finally:
            timer.cancel()
            pending.pop(ident, None)
            if slot.retired and not pending:
                self._close(loop, slot)

    def _socket(self, loop: asyncio.AbstractEventLoop) -> _PooledSocket:
        if self.closed:
            # a query that started under the configuration a reload replaced: it still
            # gets its answer, from a socket closed as soon as it is done
            slot = self._open(loop)
            slot.retired = True
            return slot
        sockets = self.sockets
        if len(sockets) < POOL_SOCKETS:
            slot = self._open(loop)
            sockets.append(slot)
            return slot
        index = secrets.randbelow(len(sockets))
        slot = sockets[index]
        if slot.retired or slot.uses >= SOCKET_USES or loop.time() >= slot.expires:
            slot.retired = True
            if not slot.pending:
                self._close(loop, slot)
            slot = sockets[index] = self._open(loop)
            return slot
        slot.uses += 1
        return slot

    def _open(self, loop: asyncio.AbstractEventLoop) -> _PooledSocket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        slot = _PooledSocket(sock, loop.time() + SOCKET_AGE)
        slot.uses = 1
        loop.add_reader(sock.fileno(), self._readable, slot)
        return slot

    def _readable(self, slot: _PooledSocket) -> None:
        recv = slot.sock.recv
        pending = slot.pending
        for _ in range(64):
            try:
                data = recv(65_535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ICMP unreachable and friends: every query here is lost
                for future, *_ in list(pending.values()):
                    if not future.done():
                        future.set_exception(OSError(e.errno, e.strerror))
                slot.retired = True
                return
            waiting = pending.get(int.from_bytes(data[:2], "big")) if len(data) >= 12 else None
            if waiting is None:
                self.on_stray()
                continue
            future, qname, qtype, qclass, on_mismatch = waiting
            if not wire.reply_matches(data, data[0] << 8 | data[1], qname, qtype, qclass):
                on_mismatch()
                continue
            if not future.done():
                future.set_result(data)

    def _close(self, loop: asyncio.AbstractEventLoop, slot: _PooledSocket) -> None:
        if slot.closed:
            return
        slot.closed = True
        loop.remove_reader(slot.sock.fileno())
        slot.sock.close()

    def close(self) -> None:
        """Closes the idle sockets now and the others once their queries are answered or
        time out, so queries in flight are not cut short (a reload dropped this server)."""
        self.closed = True
        loop = asyncio.get_event_loop()
        for slot in self.sockets:
            slot.retired = True
            if not slot.pending:
                self._close(loop, slot)
        self.sockets = []


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
