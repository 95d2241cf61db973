"""DNS over TLS (RFC 7858): RFC 7766 framing on a persistent TLS connection per server,
with many queries in flight at once and replies taken in any order, matched by ID and
question. Queries are padded to a multiple of 128 octets (RFC 8467)."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Callable

import forwarder.upstream.transports.secure as secure
import forwarder.upstream.transports.udp as udp
from forwarder.config import model
from forwarder.dns import wire
from forwarder.upstream.transports.base import pad

FRAME = struct.Struct("!H")


class _Waiting:
    __slots__ = ("future", "qclass", "qname", "qtype")

    def __init__(self, future: asyncio.Future[bytes], qname: bytes, qtype: int,
                 qclass: int) -> None:
        self.future = future
        self.qname = qname
        self.qtype = qtype
        self.qclass = qclass


class DotChannel(secure.Channel):
    """One DoT connection: writes framed queries, and a reader task hands each reply to
    the query waiting on its ID (after checking its question)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 pool: TlsTransport) -> None:
        super().__init__(reader, writer, pool)
        self.host = pool.server.host
        self.on_mismatch = pool.on_mismatch
        self.waiting: dict[int, _Waiting] = {}
        self.out: list[bytes] = []  # frames waiting for flush()
        self.start()

    async def ask(self, query: bytes, qname: bytes, qtype: int, qclass: int) -> bytes:
        if self.closed:
            raise secure.ConnectionClosed(f"connection to {self.host} closed")
        waiting = self.waiting
        ident = udp.IDS.next()
        while ident in waiting:
            ident = udp.IDS.next()
        entry = _Waiting(asyncio.get_running_loop().create_future(), qname, qtype, qclass)
        data = pad(ident.to_bytes(2, "big") + query[2:])
        waiting[ident] = entry
        self.began()
        try:
            self.out.append(FRAME.pack(len(data)) + data)
            self.flush_soon()
            return await entry.future
        finally:
            if waiting.get(ident) is entry:
                del waiting[ident]
            self.ended()

    def flush(self) -> None:
        out, self.out = self.out, []
        if out and not self.writer.is_closing():
            self.writer.write(b"".join(out))

    async def read(self) -> None:
        reader, waiting = self.reader, self.waiting
        reason = f"{self.host} closed the connection before answering"
        try:
            while True:
                (length,) = FRAME.unpack(await reader.readexactly(2))
                data = await reader.readexactly(length)
                self.heard += 1
                entry = waiting.get(data[0] << 8 | data[1]) if length >= 12 else None
                if entry is None or not wire.reply_matches(
                        data, data[0] << 8 | data[1], entry.qname, entry.qtype, entry.qclass):
                    self.on_mismatch()
                    continue
                if not entry.future.done():
                    entry.future.set_result(data)
        except asyncio.IncompleteReadError:
            pass
        except (OSError, ssl.SSLError) as e:
            reason = f"connection to {self.host} failed: {e.__class__.__name__}"
        except asyncio.CancelledError:
            reason = f"connection to {self.host} closed"
        finally:
            self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        for entry in list(self.waiting.values()):
            if not entry.future.done():
                entry.future.set_exception(secure.ConnectionClosed(reason))
        self.waiting.clear()
        self.close()


class TlsTransport(secure.Pool):
    """Transport `tls`: DNS over TLS to one server over a persistent connection."""

    name = "tls"

    def __init__(self, group: model.UpstreamGroup, server: model.Server, ctx: ssl.SSLContext,
                 on_mismatch: Callable[[], None]) -> None:
        super().__init__(group, server, ctx)
        self.on_mismatch = on_mismatch

    async def open_channel(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> secure.Channel:
        return DotChannel(reader, writer, self)
