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


# Unsent replies a connection may hold before it stops reading queries (the transport's
# write buffer; the kernel's socket buffers come on top): RFC 7766 6.2.5 flow control
WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024


class TcpListener:
    """Accepts connections on one bound socket and serves each through the Pipeline.

    At `tcp_max_connections` a new connection takes the place of the one that has been
    idle longest (no query in flight; a client that never completed a frame counts as
    idle since it connected), as RFC 7766 6.2.3 suggests; when every connection has
    queries in flight, the new one is refused. No client address holds more than
    `tcp_max_connections_per_client` connections.
    """

    def __init__(self, sock: socket.socket, pipeline: Pipeline, accounting: Accounting,
                 limits: Limits) -> None:
        self.sock = sock
        self.pipeline = pipeline
        self.accounting = accounting
        self.limits = limits
        self.connections: set[TcpConnection] = set()
        self.per_client: dict[str, int] = {}
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

    def admit(self, conn: TcpConnection) -> bool:
        """Takes *conn* into the table, making room if it must; answers False (and counts
        why) when it may not stay."""
        limits = self.limits
        if self.per_client.get(conn.client[0], 0) >= limits.tcp_max_connections_per_client:
            metrics.dropped.labels("tcp_per_client_limit").inc()
            return False
        if len(self.connections) >= limits.tcp_max_connections:
            idle = [c for c in self.connections if not c.pending]
            if not idle:
                metrics.dropped.labels("tcp_connection_limit").inc()
                return False
            oldest = min(idle, key=lambda c: c.last_active)
            metrics.dropped.labels("tcp_evicted_idle").inc()
            oldest.abort()
        self.connections.add(conn)
        self.per_client[conn.client[0]] = self.per_client.get(conn.client[0], 0) + 1
        metrics.tcp_connections.inc()
        return True

    def forget(self, conn: TcpConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            address = conn.client[0]
            left = self.per_client.get(address, 1) - 1
            if left:
                self.per_client[address] = left
            else:
                self.per_client.pop(address, None)
            metrics.tcp_connections.dec()


class TcpConnection(asyncio.Protocol):
    """One client connection: frames in, replies out in completion order (it is the
    pipeline's Client for the queries it hands over).

    Reading stops while `tcp_max_queries_per_connection` queries are in flight and while
    more than WRITE_HIGH_WATER bytes of replies wait for the client to take them; it goes
    on when either drains. Three timers bound what a client can hold:

    - idle: `tcp_idle_timeout` after the last complete query or answer, with no query in
      flight, the connection is closed (partial bytes do not count as activity);
    - frame: a query must be complete `tcp_frame_timeout` after its first byte arrived,
      however slowly the rest trickles in;
    - stall: a client that takes none of its replies for `tcp_idle_timeout` while they
      pile up (writing is paused) is aborted, and so is one that leaves replies untaken
      that long after the connection was closed.
    """

    def __init__(self, listener: TcpListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending = 0  # queries handed to the pipeline and not answered yet
        self.client: tuple[str, int] = ("", 0)
        self.last_active = 0.0  # time.monotonic() of the last complete query or answer
        self.reading = True
        self.write_paused = False
        self.closing = False  # the client sent EOF: answer what is in flight, then close
        self._idle: asyncio.TimerHandle | None = None
        self._frame_timer: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.client = transport.get_extra_info("peername")[:2]
        if not self.listener.admit(self):
            transport.abort()
            return
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)  # type: ignore[attr-defined]
        self._loop = asyncio.get_running_loop()
        self.last_active = time.monotonic()
        self._idle = self._loop.call_later(self.listener.limits.tcp_idle_timeout,
                                           self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.forget(self)
        for timer in (self._idle, self._frame_timer, self._stall):
            if timer is not None:
                timer.cancel()
        self.transport = None  # queries still being resolved are answered to nobody

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._read_frames()

    def eof_received(self) -> bool:
        # the client is done sending; answer what is in flight, then close
        if not self.pending:
            return False
        self.closing = True
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        self._sync_reading()
        if self._stall is None and self.transport is not None:
            self._stall = self._loop.call_later(self.listener.limits.tcp_idle_timeout,
                                                self._stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self._sync_reading()
        self._read_frames()

    # -- reading -----------------------------------------------------------------------

    def _read_frames(self) -> None:
        """Starts the complete frames in the buffer while reading is on; the rest waits in
        the buffer. A frame left incomplete must be completed before its deadline."""
        buf = self.buffer
        started = 0
        while len(buf) >= 2 and self.reading:
            (length,) = LENGTH.unpack_from(buf)
            if length == 0:  # no DNS message is empty: a broken or hostile client
                metrics.dropped.labels("tcp_zero_length_frame").inc()
                self.abort()
                return
            if len(buf) < 2 + length:
                break
            frame = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            started += 1
            self._frame(frame)
        if started:
            self.last_active = time.monotonic()
            if self._frame_timer is not None:
                self._frame_timer.cancel()
                self._frame_timer = None
        if buf and self.reading and self.transport is not None:
            if self._frame_timer is None:
                self._frame_timer = self._loop.call_later(
                    self.listener.limits.tcp_frame_timeout, self._frame_timed_out)
        elif self._frame_timer is not None:  # nothing pending, or not reading: no deadline
            self._frame_timer.cancel()
            self._frame_timer = None

    def _sync_reading(self) -> None:
        """Reads while no limit holds it back (see the class text)."""
        want = (not self.write_paused
                and self.pending < self.listener.limits.tcp_max_queries_per_connection)
        if want == self.reading or self.transport is None or self.transport.is_closing():
            return
        self.reading = want
        if want:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()
            if self._frame_timer is not None:
                self._frame_timer.cancel()
                self._frame_timer = None

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
        self._sync_reading()

    def reply(self, q: Query, reply: Reply | None) -> None:
        """Answers a query the pipeline resolved (Pipeline Client); None: it ended without
        an answer."""
        self.pending -= 1
        if reply is not None:
            self._answer(q, reply)
        if self.transport is None:
            return
        self.last_active = time.monotonic()
        if self.closing and not self.pending:
            self.close()
            return
        if not self.reading:
            self._sync_reading()
            self._read_frames()

    # -- writing -----------------------------------------------------------------------

    def _answer(self, q: Query, reply: Reply) -> None:
        if reply is DROP:
            self.listener.accounting.dropped(q)
            return
        self._write(reply.to_client(q))
        self.listener.accounting.record(q, reply, time.monotonic())

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(LENGTH.pack(len(data)) + data)

    # -- timers and closing ------------------------------------------------------------

    def _idle_check(self) -> None:
        self._idle = None
        if self.transport is None:
            return
        timeout = self.listener.limits.tcp_idle_timeout
        left = self.last_active + timeout - time.monotonic()
        if self.pending or left > 0:  # RFC 7766 6.2.3: not with queries outstanding
            self._idle = self._loop.call_later(max(left, timeout / 10), self._idle_check)
            return
        self.close()

    def _frame_timed_out(self) -> None:
        self._frame_timer = None
        metrics.dropped.labels("tcp_frame_timeout").inc()
        self.abort()

    def _stalled(self) -> None:
        self._stall = None
        metrics.dropped.labels("tcp_write_stalled").inc()
        self.abort()

    def close(self) -> None:
        """Closes once the replies written so far are sent; a client that does not take
        them within the idle timeout is aborted."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size() and self._stall is None:
            self._stall = self._loop.call_later(self.listener.limits.tcp_idle_timeout,
                                                self._stalled)

    def abort(self) -> None:
        """Drops the connection at once, replies not yet sent included."""
        if self.transport is not None:
            self.transport.abort()
