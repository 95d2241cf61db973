"""What DNS over TLS and DNS over HTTPS share: the TLS context a group's settings make,
connecting with a bounded handshake, certificate and pin failures turned into reasons a
user reads, and `Pool`, which keeps one persistent connection per server (reused across
queries, closed when idle, reopened with backoff after a failure) and counts it all.

A connection class (tls.py, https.py) subclasses `Channel` and implements `ask`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections.abc import Callable

from forwarder import metrics
from forwarder.config import model
from forwarder.upstream.transports.base import TransportError

log = logging.getLogger("forwarder")

BACKOFF_FIRST = 0.05  # seconds before the first reconnect after a failed connection
BACKOFF_MAX = 5.0

# OpenSSL verify codes (X509_V_ERR_*) worth a plainer sentence
_NAME_MISMATCH = (62, 64)  # hostname, IP address
_UNKNOWN_CA = (2, 18, 19, 20)  # no issuer, self-signed leaf, self-signed in chain, no local issuer
_EXPIRED = 10
_NOT_YET_VALID = 9


def context(group: model.UpstreamGroup, alpn: list[str] | None = None) -> ssl.SSLContext:
    """The client TLS context for a group's `tls` settings: the system trust store or
    `ca_file`, host name checking, TLS 1.2 at least. With insecure_skip_verify nothing
    is verified, which is logged as a warning each time a configuration is loaded."""
    settings = group.tls
    if settings.insecure_skip_verify:
        log.warning("upstream group %s: tls.insecure_skip_verify is true: the certificates of "
                    "%s are NOT verified, so anyone on the path can answer in their name",
                    group.name, ", ".join(s.label for s in group.servers))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=settings.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def _tlv(der: bytes, off: int) -> tuple[int, int, int]:
    """One DER element at *off*: (tag, where its value starts, where it ends)."""
    tag, length = der[off], der[off + 1]
    off += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(der[off : off + n], "big")
        off += n
    return tag, off, off + length


def spki_sha256(der: bytes) -> bytes:
    """The SHA-256 of a DER certificate's SubjectPublicKeyInfo (what `sha256/` pins name,
    as curl's --pinnedpubkey and HPKP). Raises ValueError for a certificate it cannot read."""
    try:
        _, cert, _ = _tlv(der, 0)
        _, off, _ = _tlv(der, cert)  # tbsCertificate
        tag, _, end = _tlv(der, off)
        if tag == 0xA0:  # [0] version
            off = end
        for _ in range(5):  # serialNumber, signature, issuer, validity, subject
            _, _, off = _tlv(der, off)
        _, _, end = _tlv(der, off)
    except IndexError:
        raise ValueError("certificate too short") from None
    return hashlib.sha256(der[off:end]).digest()


def _verify_reason(e: ssl.SSLCertVerificationError, host: str, name: str,
                   settings: model.TlsSettings) -> TransportError:
    code = e.verify_code
    if code in _NAME_MISMATCH:
        return TransportError("certificate", f"certificate for {host} does not match {name}")
    if code in _UNKNOWN_CA:
        store = f"tls.ca_file {settings.ca_file}" if settings.ca_file else "the system store"
        return TransportError("certificate", f"certificate of {host} is not signed by a CA "
                                             f"trusted by {store} ({e.verify_message})")
    if code == _EXPIRED:
        return TransportError("certificate", f"certificate of {host} has expired")
    if code == _NOT_YET_VALID:
        return TransportError("certificate", f"certificate of {host} is not valid yet")
    return TransportError("certificate",
                          f"certificate of {host} rejected: {e.verify_message or e.reason}")


async def connect(
    server: model.Server, settings: model.TlsSettings, ctx: ssl.SSLContext, timeout: float,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """Connects to *server* and completes the TLS handshake (and the pin check) within
    *timeout*; answers the streams and how long the handshake took (connect included).

    Raises:
        TimeoutError: the TCP connection was not established in time.
        TransportError: the handshake timed out or failed, or the certificate was refused.
        OSError: the connection was refused or reset.
    """
    loop = asyncio.get_running_loop()
    name = settings.server_name or server.host
    started = time.perf_counter()
    deadline = loop.time() + timeout
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(ctx, server_hostname=name)
        except TimeoutError:
            raise TransportError("handshake_timeout", f"TLS handshake with {server.host} "
                                                      f"timed out after {timeout:g}s") from None
        except ssl.SSLCertVerificationError as e:
            raise _verify_reason(e, server.host, name, settings) from None
        except ssl.SSLError as e:
            raise TransportError("handshake", f"TLS handshake with {server.host} failed: "
                                              f"{e.reason or e}") from None
        except (ConnectionError, EOFError) as e:
            raise TransportError("handshake", f"{server.host} closed the connection during "
                                              f"the TLS handshake ({e.__class__.__name__})") \
                from None
        if settings.pins:
            _check_pins(writer, server.host, settings.pins)
    except BaseException:
        writer.close()
        raise
    return reader, writer, time.perf_counter() - started


def _check_pins(writer: asyncio.StreamWriter, host: str, pins: tuple[bytes, ...]) -> None:
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    if not der:
        raise TransportError("pin", f"{host} sent no certificate to check the pins against")
    try:
        digest = spki_sha256(der)
    except ValueError as e:
        raise TransportError("pin", f"certificate of {host} cannot be read ({e})") from None
    if digest not in pins:
        import base64

        found = base64.b64encode(digest).decode()
        raise TransportError("pin", f"certificate of {host} matches none of the pinned keys "
                                    f"(its key is sha256/{found})")


def _again(failure: OSError, wait: float) -> OSError:
    """The error of the last failed connection attempt, raised again during the backoff."""
    if isinstance(failure, TransportError):
        return TransportError(failure.kind, f"{failure.reason} (next try in {wait:.2g}s)")
    again = type(failure)(*failure.args)
    return again


class ConnectionClosed(TransportError):
    """The connection ended before the reply came; the query was perhaps never read, so
    one retry on a new connection is safe (RFC 7766 section 6.2.1)."""

    def __init__(self, reason: str) -> None:
        super().__init__("connection", reason)


class Channel:
    """One persistent connection of a Pool: counts the queries in flight on it and closes
    it after `idle_timeout` seconds without any."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 pool: Pool) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_timeout = pool.group.idle_timeout
        self.on_closed: Callable[[Channel], None] = pool.forget
        self.task: asyncio.Task[None] | None = None
        self._flush_pending = False
        self.inflight = 0
        self.heard = 0  # replies read on it (the subclass counts): a sign it is alive
        self.closed = False
        self.draining = False  # no new queries (the server said GOAWAY)
        # the runtime of its pool was replaced: it serves that runtime's queries still
        # under way, and closes once none is in flight
        self.retired = False
        self._idle: asyncio.TimerHandle | None = None
        self._arm()

    @property
    def usable(self) -> bool:
        return not (self.closed or self.draining)

    async def ask(self, query: bytes, qname: bytes, qtype: int, qclass: int) -> bytes:
        """Sends one query on this connection and answers its reply. Raises TransportError,
        ConnectionClosed, OSError."""
        raise NotImplementedError

    async def read(self) -> None:
        """Reads replies until the connection ends, then fails what still waits and
        closes (run as `task` by `start`)."""
        raise NotImplementedError

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.read())

    def flush(self) -> None:
        """Writes what the queries of this turn of the loop queued."""
        raise NotImplementedError

    def flush_soon(self) -> None:
        """Calls `flush` once this turn of the loop is over, so that the queries sent in
        one turn share one TLS record and one system call (the write is most of the
        cost of a query on an open connection)."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_pending = False
        if not self.closed:
            self.flush()

    def began(self) -> None:
        self.inflight += 1
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def ended(self) -> None:
        self.inflight -= 1
        if self.inflight == 0:
            if self.draining or self.retired:
                self.close()
            else:
                self._arm()

    def _arm(self) -> None:
        if not self.closed:
            self._idle = asyncio.get_running_loop().call_later(self.idle_timeout, self._expire)

    def _expire(self) -> None:
        self._idle = None
        if self.inflight == 0:
            self.close()

    def drain(self) -> None:
        """Takes no more queries; closes once those in flight are over."""
        self.draining = True
        if self.inflight == 0:
            self.close()

    def retire(self) -> None:
        """Closes now when idle, else once the queries in flight are over."""
        self.retired = True
        if self.inflight == 0:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self.writer.close()
        self.on_closed(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()


class Pool:
    """The persistent connection to one encrypted upstream server: reused by every query,
    opened by the first query that finds none (the others wait for the same handshake),
    and after a failed attempt not retried before a backoff that doubles up to
    BACKOFF_MAX (queries meanwhile fail at once with the same reason, so the group moves
    on to its next server)."""

    name = "tls"

    def __init__(self, group: model.UpstreamGroup, server: model.Server,
                 ctx: ssl.SSLContext) -> None:
        self.group = group
        self.server = server
        self.ctx = ctx
        self._connect_deadline = 0.0
        self.channel: Channel | None = None
        self.connecting: asyncio.Task[Channel] | None = None
        self.closed = False
        self._failure: TransportError | OSError | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self._channels: set[Channel] = set()
        labels = (group.name, server.label, self.name)
        self._opened = metrics.upstream_connections.labels(*labels, "opened")
        self._reused = metrics.upstream_connections.labels(*labels, "reused")
        self._failed = metrics.upstream_connections.labels(*labels, "failed")
        self._handshake = metrics.upstream_handshake_duration.labels(*labels)

    async def open_channel(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> Channel:
        """Makes the protocol's Channel on a connection whose handshake is done."""
        raise NotImplementedError

    async def exchange(self, query: bytes, qname: bytes, qtype: int, qclass: int,
                       timeout: float) -> bytes:
        """Transport.exchange over the persistent connection (a query the server dropped
        by closing a reused connection is sent once more on a new one)."""
        deadline = asyncio.get_running_loop().time() + timeout
        channel, fresh = await self._channel(deadline)
        try:
            return await self._ask(channel, fresh, deadline, query, qname, qtype, qclass)
        except ConnectionClosed:
            if fresh:
                raise
        channel, fresh = await self._channel(deadline)
        return await self._ask(channel, fresh, deadline, query, qname, qtype, qclass)

    @staticmethod
    async def _ask(channel: Channel, fresh: bool, deadline: float, query: bytes,
                   qname: bytes, qtype: int, qclass: int) -> bytes:
        heard = channel.heard
        try:
            async with asyncio.timeout_at(deadline):
                return await channel.ask(query, qname, qtype, qclass)
        except TimeoutError:
            if channel.heard == heard and not fresh:
                # not one reply on it for as long as this query waited: the connection
                # may be dead while TCP does not know it yet (a middlebox forgot the flow,
                # the server wedged it); the next queries go over a new one. (Not for a
                # connection opened for this query: its handshake may have left the query
                # little time, and each new one would then be given up on the same way.)
                channel.drain()
            raise

    async def _channel(self, deadline: float) -> tuple[Channel, bool]:
        """The open connection, or a new one: (channel, whether it was opened for this).
        A new connection gets the time left until *deadline* to connect and handshake, so
        that a handshake timing out is reported as such, not as the query's timeout."""
        channel = self.channel
        if channel is not None and channel.usable:
            self._reused.inc()
            return channel, False
        loop = asyncio.get_running_loop()
        if self.connecting is None:
            failure = self._failure
            if failure is not None and loop.time() < self._retry_at:
                raise _again(failure, self._retry_at - loop.time())
            self._connect_deadline = deadline
            self.connecting = asyncio.ensure_future(self._connect(deadline - loop.time()))
            self.connecting.add_done_callback(self._connected)
        # shielded: a query that gives up does not abort a handshake others wait for
        if self._connect_deadline <= deadline:
            return await asyncio.shield(self.connecting), True
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(self.connecting), True

    async def _connect(self, timeout: float) -> Channel:
        try:
            reader, writer, seconds = await connect(self.server, self.group.tls, self.ctx,
                                                    timeout)
        except TimeoutError:
            raise TimeoutError(f"connecting to {self.server.host} timed out") from None
        try:
            channel = await self.open_channel(reader, writer)
        except BaseException:
            writer.close()
            raise
        self._handshake.observe(seconds)
        return channel

    def _connected(self, task: asyncio.Task[Channel]) -> None:
        self.connecting = None
        loop = asyncio.get_running_loop()
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            self._failed.inc()
            self._failure = error if isinstance(error, OSError) else OSError(str(error))
            self._retry_at = loop.time() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            return
        channel = task.result()
        self._opened.inc()
        self._failure = None
        self._backoff = BACKOFF_FIRST
        if channel.closed:  # the server ended it already: the queries waiting for it fail
            return
        self._channels.add(channel)
        if self.closed:
            # the queries waiting for it started before a reload: they still use it (not
            # closed here while none has begun: its idle timer closes it if none does)
            channel.retired = True
        self.channel = channel

    def forget(self, channel: Channel) -> None:
        """A channel closed (idle, the server closed it, a failure): called by Channel."""
        self._channels.discard(channel)
        if self.channel is channel:
            self.channel = None

    def close(self) -> None:
        """Transport.close (the runtime that made this pool was replaced, or the process
        is stopping): idle connections close now, busy ones once their queries are over.
        Until then the queries of the replaced runtime still under way go on using the
        pool: a later try, or one waiting for a handshake, is answered, not failed; a
        connection opened for them closes as soon as they are done."""
        self.closed = True
        for channel in list(self._channels):
            channel.retire()
