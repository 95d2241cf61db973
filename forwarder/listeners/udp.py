"""UDP listener: drains a non-blocking socket in batches from the event loop's reader
callback and hands each datagram to the pipeline (or, for a repeat of a query the cache
answered, to the cache's wire front).

Reading with `add_reader` plus up to 64 `recvfrom` per wakeup costs several times less
per datagram than asyncio's datagram transport on the default loop (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from forwarder import metrics
from forwarder.pipeline import Accounting, Pipeline
from forwarder.query import DROP, Query, Reply, receive
from forwarder.stages.front import BATCH

log = logging.getLogger("forwarder")

# what a stop still takes from a socket's queue (take_queued)
QUEUED_LIMIT = 100_000
QUEUED_SECONDS = 1.0


class UdpListener:
    """Serves one bound UDP socket through a Pipeline (it is the pipeline's Client for the
    queries it hands over)."""

    def __init__(self, sock: socket.socket, pipeline: Pipeline, accounting: Accounting) -> None:
        self.sock = sock
        self.pipeline = pipeline
        self.accounting = accounting
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

    def take_queued(self) -> int:
        """Hands the pipeline the datagrams already queued in the socket (they arrived
        before the stop: SIGTERM answers them too), at most QUEUED_LIMIT of them or for
        QUEUED_SECONDS, so that a flood cannot hold the stop; answers how many."""
        recvfrom = self.sock.recvfrom
        end = time.monotonic() + QUEUED_SECONDS
        taken = 0
        while taken < QUEUED_LIMIT and (taken % BATCH or time.monotonic() < end):
            try:
                data, addr = recvfrom(65_535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("udp receive error: %s", e)
                break
            self._datagram(data, addr)
            taken += 1
        return taken

    def close(self) -> None:
        self.stop_reading()
        self.sock.close()

    def _readable(self) -> None:
        rt = self.pipeline.holder.current
        if rt.front is not None:
            rt.front.serve(self.sock, rt.acl, self._datagram, self._send_failed,
                           self.accounting)
            return
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
        q = receive(data, addr, "udp")
        if not isinstance(q, Query):
            if q is not None:
                self._send(q, addr)
            return
        reply = self.pipeline.handle(q, self)
        if reply is not None:
            self.reply(q, reply)

    def reply(self, q: Query, reply: Reply | None) -> None:
        """Sends the reply to *q* (Pipeline Client); DROP or None: nothing is sent."""
        if reply is None:
            return
        if reply is DROP:
            self.accounting.dropped(q)
            return
        data = reply.to_client(q)
        self._send(data, q.client)
        self.accounting.record(q, reply, time.monotonic())
        if reply.cached is not None:  # a fresh cache hit: repeats may take the wire front
            front = q.runtime.front
            if front is not None:
                front.remember(q.wire, data, reply, q.rule.name, q.qtype)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as e:
            self._send_failed(e, addr)

    def _send_failed(self, error: OSError, addr: tuple[str, int]) -> None:
        """A reply that could not be sent is dropped: counted when the send buffer is full,
        logged otherwise (unless the socket was closed under it)."""
        if isinstance(error, (BlockingIOError, InterruptedError)):
            metrics.dropped.labels("udp_send_buffer_full").inc()
        elif self.sock.fileno() >= 0:
            log.debug("udp send to %s failed: %s", addr[0], error)
