"""UDP listener: drains a non-blocking socket in batches from the event loop's reader
callback, answers synchronous results at once, and runs the rest as tasks.

Reading with `add_reader` plus up to 64 `recvfrom` per wakeup costs several times less
per datagram than asyncio's datagram transport on the default loop (bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Coroutine
from typing import Any

from forwarder import metrics
from forwarder.pipeline import Accounting, Pipeline
from forwarder.query import DROP, Query, Reply, receive
from forwarder.runtime import Runtime

log = logging.getLogger("forwarder")

BATCH = 64


class UdpListener:
    """Serves one bound UDP socket through a Pipeline."""

    def __init__(self, sock: socket.socket, pipeline: Pipeline, accounting: Accounting) -> None:
        self.sock = sock
        self.pipeline = pipeline
        self.accounting = accounting
        self.tasks: set[asyncio.Task[None]] = set()
        self.forwarding = 0  # queries Pipeline.forward is resolving without a task
        self._idle: asyncio.Future[None] | None = None  # drain() waits on it for those
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
        while self.tasks or self.forwarding:
            if self.forwarding:
                self._idle = asyncio.get_running_loop().create_future()
                await self._idle
            if self.tasks:
                await asyncio.gather(*list(self.tasks), return_exceptions=True)

    def close(self) -> None:
        self.stop_reading()
        self.sock.close()

    def _readable(self) -> None:
        rt = self.pipeline.holder.current
        if rt.wire_front is not None:
            self._read_with_front(rt)
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

    def _read_with_front(self, rt: Runtime) -> None:
        """The batch reader with the cache's wire front: a repeat of a query answered from
        the cache gets the same bytes (TTLs aged) with its own ID, and nothing else runs
        (stages/cache.py explains when that is exact)."""
        front = rt.wire_front
        assert front is not None
        started = time.monotonic()
        second = int(rt.cache.clock())  # the clock the cache ages entries by
        allows = rt.acl.allows
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        hits: dict[tuple[str, int, int], int] = {}
        tail: bytes | None
        try:
            for _ in range(BATCH):
                try:
                    data, addr = recvfrom(65_535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    log.debug("udp receive error: %s", e)
                    return
                hit = front.get(data[2:])
                if hit is None or not allows(addr[0]):
                    self._datagram(data, addr)
                    continue
                tail = hit.tail if hit.second == second else hit.age_to(second)
                if tail is None:  # expired: the cache decides (stale, refresh)
                    self._datagram(data, addr)
                    continue
                try:
                    sendto(data[:2] + tail, addr)
                except OSError as e:
                    self._send_failed(e, addr)
                key = hit.accounting
                hits[key] = hits.get(key, 0) + 1
        finally:
            if hits:
                elapsed = time.monotonic() - started  # each waited at most the whole batch
                rt.cache.hits += sum(hits.values())
                for (rule, qtype, rcode), n in hits.items():
                    self.accounting.count("udp", rule, qtype, rcode, elapsed, n)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        q = receive(data, addr, "udp")
        if not isinstance(q, Query):
            if q is not None:
                self._send(q, addr)
            return
        reply = self.pipeline.fast(q)
        if reply is None:
            if self.pipeline.forward(q, self):
                self.forwarding += 1
                return
            # queries waiting on an identical one in flight hold no upstream slot, so the
            # pipeline's max_inflight does not bound them: this does (shed load, never queue)
            if len(self.tasks) >= max(2 * q.runtime.config.limits.max_inflight, 1024):
                metrics.dropped.labels("udp_inflight_limit").inc()
                return
            self.spawn(self._resolve(q))
        elif reply is not DROP:
            self._answer(q, reply)
        else:
            self.accounting.dropped(q)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Runs *work* (the rest of a query's resolution) as a task drain() waits for."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def reply(self, q: Query, reply: Reply | None) -> None:
        """Answers a query Pipeline.forward resolved (None: it ends without an answer)."""
        self.forwarding -= 1
        if reply is not None:
            self._answer(q, reply)
        if not self.forwarding and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def _resolve(self, q: Query) -> None:
        reply = await self.pipeline.resolve(q)
        if reply is not DROP:
            self._answer(q, reply)
        else:
            self.accounting.dropped(q)

    def _answer(self, q: Query, reply: Reply) -> None:
        data = reply.to_client(q)
        self._send(data, q.client)
        self.accounting.record(q, reply, time.monotonic())
        if reply.cached is not None:  # a fresh cache hit: repeats may take the wire front
            rt = q.runtime
            if rt.wire_front is not None:
                rt.cache.remember(q.wire, data, reply, q.rule.name, q.qtype)  # type: ignore[union-attr]

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
