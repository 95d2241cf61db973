"""In-process DNS-over-TLS and DNS-over-HTTPS servers a test controls, with certificates
from a throwaway CA (trustme).

- `Pki`: a CA, a certificate for `dns.test` and 127.0.0.1 signed by it, a certificate
  from another CA (unknown to the forwarder) and the PEM files a config points at.
- `FakeDot`: `FakeUpstream`'s TCP side behind TLS (RFC 7858): the same handlers and
  responses (`Delay` for out-of-order replies, `Close` for a connection cut mid-stream).
  `connections` counts accepted connections; `close_connections()` closes them as a
  server ending idle connections does; `stall_handshake` accepts TCP but never
  completes TLS; with `hold_handshake` (an Event) a connection waits for it to be set
  before its handshake (`handshake_held` is set once one waits).
- `FakeDoh`: an HTTP/2 server (h2) answering RFC 8484 POST and GET; handlers get a
  `Received` with transport "https" and may also return `HttpStatus(code)`, `Reset()`,
  or `Close()` (GOAWAY, then the connection ends); `stall_handshake` as for FakeDot. A
  body (`bytes` may be of any length) goes in as many frames as flow control allows.
  `requests` records (method, path, content-type) per request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import ssl
import urllib.parse
from pathlib import Path

import dns.message
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.fakes import Close, Delay, FakeUpstream, Handler, Received, Response, _call


@dataclasses.dataclass
class Pki:
    """Certificates for the in-test servers, written under *directory*."""

    directory: Path

    def __post_init__(self) -> None:
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.cert = self.ca.issue_cert("dns.test", "127.0.0.1")
        self.wrong_name = self.ca.issue_cert("other.test")
        self.unknown = self.other_ca.issue_cert("dns.test", "127.0.0.1")
        self.ca_file = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self, cert: trustme.LeafCert | None = None,
                       alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        (cert or self.cert).configure_cert(ctx)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def pin(self, cert: trustme.LeafCert | None = None) -> str:
        """The `sha256/...` pin of *cert*'s public key, computed with `cryptography`."""
        pem = (cert or self.cert).cert_chain_pems[0].bytes()
        spki = x509.load_pem_x509_certificate(pem).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode()

    def write(self, name: str, cert: trustme.LeafCert | None = None) -> tuple[Path, Path]:
        """Writes *cert* (chain) and its key as PEM files for an external server."""
        cert = cert or self.cert
        chain, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        return chain, key


async def handshake(writer: asyncio.StreamWriter, ctx: ssl.SSLContext, stall: bool,
                    stalled: list[asyncio.StreamWriter]) -> bool:
    """The server side of a TLS handshake on an accepted connection; answers whether it
    completed. *stall*: TCP is up, but the server never speaks TLS (the connection is
    kept in *stalled*, to be closed at the end)."""
    if stall:
        stalled.append(writer)
        return False
    try:
        await writer.start_tls(ctx)
    except (ssl.SSLError, ConnectionError, OSError):
        writer.close()  # the client refused our certificate
        return False
    return True


class FakeDot(FakeUpstream):
    """A DNS-over-TLS server on 127.0.0.1 answering with the test's handler."""

    def __init__(self, pki: Pki, handler: Handler | None = None,
                 cert: trustme.LeafCert | None = None) -> None:
        super().__init__(handler)
        self.ctx = pki.server_context(cert)
        self.connections = 0  # TLS established
        self.attempts = 0  # TCP connections accepted
        self.stall_handshake = False
        self.hold_handshake: asyncio.Event | None = None
        self.handshake_held = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._stalled: list[asyncio.StreamWriter] = []

    async def start(self) -> FakeDot:
        self._stopping = False
        self._tcp = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._tcp.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        if self.hold_handshake is not None:
            writer.transport.pause_reading()  # the ClientHello stays for start_tls to read
            self.handshake_held.set()
            await self.hold_handshake.wait()
        if await handshake(writer, self.ctx, self.stall_handshake, self._stalled):
            self.connections += 1
            self._writers.append(writer)
            await self._serve_connection(reader, writer)

    def close_connections(self) -> None:
        """Closes every open connection, as a server does with idle ones."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def stop(self) -> None:
        for writer in self._stalled:
            writer.close()
        await super().stop()


@dataclasses.dataclass(frozen=True)
class HttpStatus:
    """Answer the request with this HTTP status (and a text body)."""

    code: int


@dataclasses.dataclass(frozen=True)
class Reset:
    """Reset the request's stream (RST_STREAM) instead of answering."""


@dataclasses.dataclass
class _Request:
    headers: dict[bytes, bytes]
    body: bytearray = dataclasses.field(default_factory=bytearray)


class FakeDoh:
    """A DNS-over-HTTPS (HTTP/2) server on 127.0.0.1 answering with the test's handler."""

    def __init__(self, pki: Pki, handler: Handler | None = None,
                 cert: trustme.LeafCert | None = None, path: str = "/dns-query") -> None:
        from tests.fakes import default_handler

        self.handler: Handler = handler or default_handler
        self.ctx = pki.server_context(cert, alpn=["h2"])
        self.path = path
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self.stall_handshake = False
        self.hold_handshake: asyncio.Event | None = None
        self.handshake_held = asyncio.Event()
        self.received: list[Received] = []
        self.requests: list[tuple[str, str, str]] = []  # method, path, content-type
        self.errors: list[BaseException] = []
        self._changed = asyncio.Event()
        self._window = asyncio.Event()  # the client granted more flow-control window
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{self.path}"

    async def __aenter__(self) -> FakeDoh:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def close_connections(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Waits until *n* queries have been received (as FakeUpstream.wait_for)."""
        async with asyncio.timeout(timeout):
            while len(self.received) < n:
                self._changed.clear()
                await self._changed.wait()
        return list(self.received)

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if self.hold_handshake is not None:
            writer.transport.pause_reading()  # the ClientHello stays for start_tls to read
            self.handshake_held.set()
            await self.hold_handshake.wait()
        if await handshake(writer, self.ctx, self.stall_handshake, self._writers):
            await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        requests: dict[int, _Request] = {}
        peer = writer.get_extra_info("peername")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        requests[event.stream_id] = _Request(dict(event.headers))
                    elif isinstance(event, h2.events.DataReceived):
                        requests[event.stream_id].body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.WindowUpdated):
                        self._window.set()
                    elif isinstance(event, h2.events.StreamEnded):
                        request = requests.pop(event.stream_id)
                        task = asyncio.ensure_future(
                            self._answer(conn, writer, event.stream_id, request, peer))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                writer.write(conn.data_to_send())
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    async def _answer(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter,
                      sid: int, request: _Request, peer: tuple[str, int]) -> None:
        method = request.headers.get(b":method", b"").decode()
        target = request.headers.get(b":path", b"").decode()
        path, _, query = target.partition("?")
        ctype = request.headers.get(b"content-type", b"").decode()
        self.requests.append((method, path, ctype))
        if method == "GET":
            encoded = urllib.parse.parse_qs(query).get("dns", [""])[0]
            wire = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        else:
            wire = bytes(request.body)
        try:
            message: dns.message.Message | None = dns.message.from_wire(wire)
        except Exception:
            message = None
        rx = Received("https", wire, message, (peer[0], peer[1]))
        self.received.append(rx)
        self._changed.set()
        try:
            response = await _call(self.handler, rx)
            while isinstance(response, Delay):
                await asyncio.sleep(response.seconds)
                response = response.then
            body = self._respond(conn, sid, response)
            if body:
                await self._send_body(conn, writer, sid, body)
        except Exception as e:  # a broken handler: recorded, the stream reset
            self.errors.append(e)
            self._respond(conn, sid, Reset())
        with contextlib.suppress(ConnectionError, RuntimeError):
            if not writer.is_closing():
                writer.write(conn.data_to_send())
                if isinstance(response, Close):
                    writer.close()

    async def _send_body(self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter,
                         sid: int, body: bytes) -> None:
        """Sends *body* on stream *sid* in the frames the client's flow control allows."""
        while True:
            try:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                return  # the client reset the stream
            if room <= 0:
                self._window.clear()
                await self._window.wait()
                continue
            chunk, body = body[:room], body[room:]
            conn.send_data(sid, chunk, end_stream=not body)
            writer.write(conn.data_to_send())
            if not body:
                return

    @staticmethod
    def _respond(conn: h2.connection.H2Connection, sid: int,
                 response: Response | object) -> bytes:
        """Answers the stream: headers, and the body if it fits in one frame; answers the
        body left to send (`_send_body`)."""
        if isinstance(response, Reset):
            conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            return b""
        if isinstance(response, Close):  # GOAWAY, then the connection ends
            conn.close_connection()
            return b""
        if isinstance(response, HttpStatus):
            body, status, ctype = b"no\n", response.code, b"text/plain"
        elif response is None:
            return b""  # never answered: the client times out
        else:
            body = response if isinstance(response, bytes) else response.to_wire()  # type: ignore[union-attr]
            status, ctype = 200, b"application/dns-message"
        conn.send_headers(sid, [(b":status", str(status).encode()), (b"content-type", ctype),
                                (b"content-length", str(len(body)).encode())])
        if len(body) > conn.max_outbound_frame_size:
            return body
        conn.send_data(sid, body, end_stream=True)
        return b""
