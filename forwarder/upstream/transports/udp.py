"""UDP exchange with one upstream server: `UdpPool` (shared, rotated sockets with an ID
table) for queries, and `exchange` (a fresh socket each time) for health probes. Sockets
are connected to the server, so only its address and port can answer; the ID and question
are checked too."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

from forwarder.dns import wire


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
RANDOM_BATCH = 4096  # bytes read from the kernel's CSPRNG at a time


class RandomIds:
    """16-bit query IDs from the kernel's CSPRNG, read a few thousand at a time: one
    getrandom call per 2,048 IDs instead of one per query."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = RANDOM_BATCH  # read on first use

    def next(self) -> int:
        pos = self._pos
        if pos >= RANDOM_BATCH:
            self._buf = os.urandom(RANDOM_BATCH)
            pos = 0
        self._pos = pos + 2
        buf = self._buf
        return buf[pos] << 8 | buf[pos + 1]


IDS = RandomIds()


class Waiter:
    """A query waiting on a pooled socket: the question its reply must carry, and what
    to call with the outcome. Subclasses say what happens on `resolved` and `failed`."""

    __slots__ = ("ident", "on_mismatch", "qclass", "qname", "qtype", "slot", "timer")

    def __init__(self, qname: bytes, qtype: int, qclass: int,
                 on_mismatch: Callable[[], None]) -> None:
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass
        self.on_mismatch = on_mismatch
        self.ident = -1
        self.slot: _PooledSocket | None = None
        self.timer: asyncio.TimerHandle | None = None

    def resolved(self, data: bytes) -> None:
        """The matching reply arrived."""
        raise NotImplementedError

    def failed(self, error: BaseException) -> None:
        """No reply: TimeoutError, or an OSError the socket reported."""
        raise NotImplementedError


class _FutureWaiter(Waiter):
    """A waiter for `UdpPool.exchange`: the outcome goes into a future."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[bytes], qname: bytes, qtype: int, qclass: int,
                 on_mismatch: Callable[[], None]) -> None:
        super().__init__(qname, qtype, qclass, on_mismatch)
        self.future = future

    def resolved(self, data: bytes) -> None:
        if not self.future.done():
            self.future.set_result(data)

    def failed(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _PooledSocket:
    """One connected UDP socket of a pool and the queries waiting on it, by ID."""

    __slots__ = ("closed", "expires", "pending", "retired", "sock", "uses")

    def __init__(self, sock: socket.socket, expires: float) -> None:
        self.sock = sock
        self.expires = expires
        self.pending: dict[int, Waiter] = {}
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

    `send` hands the outcome to a Waiter's callbacks (the task-free miss path);
    `exchange` awaits it.
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
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiter = _FutureWaiter(future, qname, qtype, qclass, on_mismatch)
        self.send(waiter, query, timeout)
        try:
            return await future
        finally:
            if waiter.slot is not None:  # cancelled: nobody will take the reply
                self._forget(waiter)

    def send(self, waiter: Waiter, query: bytes, timeout: float) -> None:
        """Sends *query* (its ID is replaced) for *waiter*, which is told the outcome
        later (never from within this call). Raises OSError if it cannot be sent."""
        loop = asyncio.get_running_loop()
        slot = self._socket(loop)
        pending = slot.pending
        ident = IDS.next()
        while ident in pending:
            ident = IDS.next()
        waiter.ident = ident
        waiter.slot = slot
        pending[ident] = waiter
        waiter.timer = loop.call_later(timeout, self._expire, waiter)
        try:
            slot.sock.send(ident.to_bytes(2, "big") + query[2:])
        except OSError:
            self._forget(waiter)
            raise

    def _forget(self, waiter: Waiter) -> None:
        """Takes *waiter* off its socket: answered, expired or given up."""
        slot = waiter.slot
        if slot is None:
            return
        waiter.slot = None
        if waiter.timer is not None:
            waiter.timer.cancel()
        pending = slot.pending
        if pending.get(waiter.ident) is waiter:
            del pending[waiter.ident]
        if slot.retired and not pending:
            self._close(slot)

    def _expire(self, waiter: Waiter) -> None:
        waiter.timer = None
        self._forget(waiter)
        waiter.failed(TimeoutError())

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
        index = IDS.next() % POOL_SOCKETS  # 65,536 is a multiple of 8: no bias
        slot = sockets[index]
        if slot.retired or slot.uses >= SOCKET_USES or loop.time() >= slot.expires:
            slot.retired = True
            if not slot.pending:
                self._close(slot)
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
                slot.retired = True
                for waiter in list(pending.values()):
                    self._forget(waiter)
                    waiter.failed(OSError(e.errno, e.strerror))
                return
            waiter = pending.get(data[0] << 8 | data[1]) if len(data) >= 12 else None
            if waiter is None:
                self.on_stray()
                continue
            if not wire.reply_matches(data, waiter.ident, waiter.qname, waiter.qtype,
                                      waiter.qclass):
                waiter.on_mismatch()
                continue
            self._forget(waiter)
            waiter.resolved(data)

    def _close(self, slot: _PooledSocket) -> None:
        if slot.closed:
            return
        slot.closed = True
        asyncio.get_event_loop().remove_reader(slot.sock.fileno())
        slot.sock.close()

    def close(self) -> None:
        """Closes the idle sockets now and the others once their queries are answered or
        time out, so queries in flight are not cut short (a reload dropped this server)."""
        self.closed = True
        for slot in self.sockets:
            slot.retired = True
            if not slot.pending:
                self._close(slot)
        self.sockets = []
