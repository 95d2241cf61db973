"""TCP listener (RFC 7766): two-byte length framing, several queries in flight on one
connection answered as they complete, an idle timeout, and a cap on connections."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from forwarder import metrics
from forwarder.config.model import Limits
from forwarder.pipeline import Accounting, Pipeline
from forwarder.query import DROP, Query, Reply, receive

log = logging.getLogger("forwarder")

LENGTH = struct.Struct("!H")


class TcpListener:
    """Accepts connections on one bound socket and serves each through the Pipeline."""

    def __init__(self, sock: socket.socket, pipeline: Pipeline, accounting: Accounting,
                 limits: Limits) -> None:
        self.sock = sock
        self.pipeline = pipeline
        self.accounting = accounting
        self.limits = limits
        self.connections: set[TcpConnection] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: TcpConnection(self), sock=self.sock)

    def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    def close_connections(self) -> None:
        """Closes every connection (once the pipeline has answered what was in flight)."""
        for conn in list(self.connections):
            conn.close()

    def close(self) -> None:
        self.stop_accepting()
        for conn in list(self.connections):
            conn.close()
        self.sock.close()


class TcpConnection(asyncio.Protocol):
    """One client connection: frames in, replies out in completion order (it is the
    pipeline's Client for the queries it hands over)."""

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending = 0  # queries handed to the pipeline and not answered yet
        self.client: tuple[str, int] = ("", 0)
        self.idle: asyncio.TimerHandle | None = None
        self.paused = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        listener = self.listener
        if len(listener.connections) >= listener.limits.tcp_max_connections:
            metrics.dropped.labels("tcp_connection_limit").inc()
            transport.abort()
            return
        self.client = transport.get_extra_info("peername")[:2]
        listener.connections.add(self)
        metrics.tcp_connections.inc()
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.listener.connections:
            self.listener.connections.discard(self)
            metrics.tcp_connections.dec()
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None  # queries still being resolved are answered to nobody

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._read_frames()
        self._arm_idle()

    def _read_frames(self) -> None:
        """Starts the complete frames in the buffer, until the per-connection cap pauses
        reading; the rest waits in the buffer for a query to finish."""
        buf = self.buffer
        while len(buf) >= 2 and not self.paused:
            (length,) = LENGTH.unpack_from(buf)
            if len(buf) < 2 + length:
                break
            frame = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            self._frame(frame)

    def eof_received(self) -> bool:
        # the client is done sending; answer what is in flight, then close
        if not self.pending:
            return False
        self.closing = True
        return True

    def _frame(self, data: bytes) -> None:
        q = receive(data, self.client, "tcp")
        if not isinstance(q, Query):
            if q is not None:
                self._write(q)
            return
        reply = self.listener.pipeline.handle(q, self)
        if reply is not None:
            self._answer(q, reply)
            return
        self.pending += 1
        if self.pending >= self.listener.limits.tcp_max_queries_per_connection:
            self.paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def reply(self, q: Query, reply: Reply | None) -> None:
        """Answers a query the pipeline resolved (Pipeline Client); None: it ended without
        an answer."""
        self.pending -= 1
        if reply is not None:
            self._answer(q, reply)
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
            self._read_frames()
        if not self.pending:
            if self.closing:
                self.close()
            else:
                self._arm_idle()

    def _answer(self, q: Query, reply: Reply) -> None:
        if reply is DROP:
            self.listener.accounting.dropped(q)
            return
        self._write(reply.to_client(q))
        self.listener.accounting.record(q, reply, time.monotonic())

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(LENGTH.pack(len(data)) + data)

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.listener.limits.tcp_idle_timeout, self._idle_fired)

    def _idle_fired(self) -> None:
        if self.pending:  # RFC 7766 6.2.3: do not close with queries outstanding
            self._arm_idle()
            return
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
