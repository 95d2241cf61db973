"""DNS over HTTPS (RFC 8484) over HTTP/2: one persistent connection per server with each
query on its own stream (POST by default, GET with `method: get`), media type
application/dns-message, DNS ID 0 (the stream matches the reply; RFC 8484 section 4.1).
An HTTP status other than 200, a reset stream or a wrong media type fails the try with
a reason that names the URL. Queries are padded to a multiple of 128 octets (RFC 8467).

HTTP/2 is spoken with `h2`, a sans-IO state machine, on the same asyncio streams and
TLS set-up as DNS over TLS: the forwarder keeps control of connections, streams,
timeouts and errors, and needs no second connection pool of an HTTP client.
"""

from __future__ import annotations

import asyncio
import base64
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import forwarder.upstream.transports.secure as secure
from forwarder.config import model
from forwarder.dns import wire
from forwarder.upstream.transports.base import TransportError, pad

MEDIA_TYPE = b"application/dns-message"
READ_SIZE = 65_536

# what a status usually means for DoH, to put next to the number
STATUS_HINTS = {
    400: "bad request", 401: "unauthorized", 403: "forbidden",
    404: "not found: check the URL's path", 405: "method not allowed: try the other method",
    413: "payload too large", 414: "URI too long: try method: post",
    415: "unsupported media type", 429: "too many requests", 500: "internal server error",
    501: "not implemented", 502: "bad gateway", 503: "service unavailable",
    504: "gateway timeout",
}


class _Stream:
    __slots__ = ("body", "future", "headers")

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()


class DohChannel(secure.Channel):
    """One HTTP/2 connection: requests go out as streams, a reader task feeds what
    arrives to the h2 state machine and completes each stream's future."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 pool: HttpsTransport) -> None:
        super().__init__(reader, writer, pool)
        self.url = pool.server.label
        self.authority = pool.authority
        self.path = pool.server.path or "/dns-query"
        self.get = pool.group.method == "get"
        # h2's header checks cost a third of a request: our own headers are valid by
        # construction, and of the server's only :status and content-type are read, each
        # compared with the one value accepted (framing and HPACK are still enforced)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.streams: dict[int, _Stream] = {}
        self.room = asyncio.Event()  # a stream closed or the window grew
        self.flush()
        self.start()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def ask(self, query: bytes, qname: bytes, qtype: int, qclass: int) -> bytes:
        body = pad(b"\x00\x00" + query[2:])  # ID 0
        self.began()
        try:
            sid, stream = await self._send(body)
            try:
                data = await stream.future
            finally:
                self.streams.pop(sid, None)
                self.room.set()
            if not wire.reply_matches(data, 0, qname, qtype, qclass):
                raise TransportError("http", f"{self.url} answered another question")
            return data
        finally:
            self.ended()

    async def _send(self, body: bytes) -> tuple[int, _Stream]:
        conn = self.h2
        while True:
            if self.closed:
                raise secure.ConnectionClosed(f"connection to {self.url} closed")
            window_ok = self.get or conn.outbound_flow_control_window >= len(body)
            # our streams are open until their reply ends: counting them is cheaper than
            # h2's open_outbound_streams, which walks every stream
            if len(self.streams) < conn.remote_settings.max_concurrent_streams and window_ok:
                break
            self.room.clear()
            await self.room.wait()
        try:
            sid = conn.get_next_available_stream_id()
        except h2.exceptions.ProtocolError as e:  # its 2^30 stream IDs are used up
            raise self._unusable(e) from None
        stream = _Stream(asyncio.get_running_loop().create_future())
        self.streams[sid] = stream
        path = self.path
        if self.get:
            path += "?dns=" + base64.urlsafe_b64encode(body).decode().rstrip("=")
        headers = [(b":method", b"GET" if self.get else b"POST"), (b":scheme", b"https"),
                   (b":authority", self.authority), (b":path", path.encode()),
                   (b"accept", MEDIA_TYPE)]
        if not self.get:
            headers += [(b"content-type", MEDIA_TYPE), (b"content-length", b"%d" % len(body))]
        try:
            conn.send_headers(sid, headers, end_stream=self.get)
            if not self.get:
                conn.send_data(sid, body, end_stream=True)
        except h2.exceptions.ProtocolError as e:
            self.streams.pop(sid, None)
            raise self._unusable(e) from None
        self.flush_soon()
        return sid, stream

    def _unusable(self, error: h2.exceptions.ProtocolError) -> secure.ConnectionClosed:
        """This connection cannot send another request: it takes no more (those in flight
        finish on it), and the query is sent again on a new one."""
        self.drain()
        return secure.ConnectionClosed(f"{self.url}: cannot send on this connection "
                                       f"({error.__class__.__name__}: {error})")

    async def read(self) -> None:
        reason = f"{self.url} closed the connection before answering"
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                try:
                    for event in self.h2.receive_data(data):
                        self._event(event)
                except h2.exceptions.ProtocolError as e:
                    reason = f"{self.url} broke the HTTP/2 protocol ({e.__class__.__name__})"
                    break
                self.flush()
        except (OSError, ssl.SSLError) as e:
            reason = f"connection to {self.url} failed: {e.__class__.__name__}"
        except asyncio.CancelledError:
            reason = f"connection to {self.url} closed"
        finally:
            self._fail_all(secure.ConnectionClosed(reason))

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.future.done():  # (not given up on)
                stream.body += event.data
                if len(stream.body) > wire.MAX_MESSAGE:
                    self._finish(event.stream_id, TransportError(
                        "http", f"{self.url} sent more than a DNS message can hold"))
                    if event.stream_ended is None:  # (h2 refuses to reset an ended stream)
                        self.h2.reset_stream(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.heard += 1
            code = getattr(event.error_code, "name", event.error_code)
            self._finish(event.stream_id, TransportError(
                "http", f"{self.url} reset the request (HTTP/2 {code})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: streams above last_stream_id were not processed: safe to send again
            self.draining = True
            last = event.last_stream_id or 0
            for sid in [s for s in self.streams if s > last]:
                self._finish(sid, secure.ConnectionClosed(f"{self.url} is closing the "
                                                          "connection (GOAWAY)"))
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.room.set()

    def _complete(self, sid: int) -> None:
        self.heard += 1
        stream = self.streams.get(sid)
        if stream is None:
            return
        status_text = stream.headers.get(b":status", b"")
        status = int(status_text) if status_text.isdigit() else 0
        if status != 200:
            hint = STATUS_HINTS.get(status)
            self._finish(sid, TransportError(
                "http_status", f"{self.url} answered HTTP {status}" + (f" ({hint})" if hint
                                                                       else "")))
            return
        ctype = stream.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != MEDIA_TYPE:
            self._finish(sid, TransportError(
                "http", f"{self.url} answered with content-type {ctype.decode('latin-1')!r}, "
                        "not application/dns-message"))
            return
        if not stream.future.done():
            stream.future.set_result(bytes(stream.body))

    def _finish(self, sid: int, error: Exception) -> None:
        stream = self.streams.get(sid)
        if stream is not None and not stream.future.done():
            stream.future.set_exception(error)

    def _fail_all(self, error: Exception) -> None:
        for sid in list(self.streams):
            self._finish(sid, error)
        self.room.set()
        self.close()

    def close(self) -> None:
        if not self.closed:
            try:
                self.h2.close_connection()
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
        super().close()


class HttpsTransport(secure.Pool):
    """Transport `https`: DNS over HTTPS (HTTP/2) to one URL over a persistent connection."""

    name = "https"

    def __init__(self, group: model.UpstreamGroup, server: model.Server,
                 ctx: ssl.SSLContext) -> None:
        super().__init__(group, server, ctx)
        host = group.tls.server_name or (f"[{server.host}]" if ":" in server.host
                                         else server.host)
        self.authority = (host if server.port == 443 else f"{host}:{server.port}").encode()

    async def open_channel(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> secure.Channel:
        sslobj = writer.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        if alpn != "h2":
            raise TransportError("http", f"{self.server.label} does not speak HTTP/2 "
                                         f"(ALPN {alpn or 'none'})")
        return DohChannel(reader, writer, self)
