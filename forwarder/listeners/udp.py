"""UDP listener: drains a non-blocking socket in batches from the event loop's reader
callback, answers synchronous results at once, and runs the rest as tasks.

Reading with `add_reader` plus up to 64 `recvfrom` per wakeup costs several times less
per datagram than asyncio's datagram transport on the default loop (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

from forwarder import metrics, wire
from forwarder.config.model import Listener
from forwarder.errors import DropPacket, FormError
from forwarder.pipeline import DROP, Accounting, Pipeline
from forwarder.query import Query, Reply

log = logging.getLogger("forwarder")

BATCH = 64


def bind(listener: Listener, buffer_size: int, reuse_port: bool = False) -> socket.socket:
    """Binds a non-blocking UDP socket for *listener*. Raises OSError."""
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # the kernel caps this at net.core.rmem_max/wmem_max; a smaller buffer still works
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
        sock.bind((listener.address, listener.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class UdpListener:
    """Serves one bound UDP socket through a Pipeline."""

    def __init__(self, sock: socket.socket, pipeline: Pipeline, accounting: Accounting) -> None:
        self.sock = sock
        self.pipeline = pipeline
        self.accounting = accounting
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def stop_reading(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None

    async def drain(self) -> None:
        """Waits for the queries already being resolved."""
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def close(self) -> None:
        self.stop_reading()
        self.sock.close()

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        for _ in range(BATCH):
            try:
                data, addr = recvfrom(65_535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. ICMP errors surfacing on the socket
                log.debug("udp receive error: %s", e)
                return
            self._datagram(data, addr)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            q = Query.from_wire(data, addr, "udp", time.monotonic())
        except DropPacket as e:
            metrics.malformed.labels(e.kind).inc()
            return
        except FormError as e:
            metrics.malformed.labels(e.kind).inc()
            rcode = wire.Rcode.NOTIMP if e.kind == "notimp" else wire.Rcode.FORMERR
            self._send(wire.header_only_reply(data, rcode), addr)
            return
        reply = self.pipeline.fast(q)
        if reply is None:
            task = asyncio.ensure_future(self._resolve(q))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif reply is not DROP:
            self._answer(q, reply)
        else:
            self.accounting.dropped(q)

    async def _resolve(self, q: Query) -> None:
        reply = await self.pipeline.resolve(q)
        if reply is not DROP:
            self._answer(q, reply)
        else:
            self.accounting.dropped(q)

    def _answer(self, q: Query, reply: Reply) -> None:
        self._send(reply.to_client(q), q.client)
        self.accounting.record(q, reply, time.monotonic())

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            metrics.dropped.labels("udp_send_buffer_full").inc()
        except OSError as e:
            if self.sock.fileno() >= 0:
                log.debug("udp send to %s failed: %s", addr[0], e)
