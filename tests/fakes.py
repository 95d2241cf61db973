"""In-process fake upstream DNS server that a test controls, plus raw-bytes client helpers.

This module owns `FakeUpstream`: a UDP+TCP DNS server on loopback (one port for both)
that records every query it receives and answers with whatever the test's handler
returns (the shape of dnspython's ``nanonameserver`` and CoreDNS's ``dnstest``). It also
owns the response vocabulary (`Delay`, `WrongSource`, `Truncated`, `Close`), the answer
builders `reply` and `answers`, and the raw clients `udp_raw` and `tcp_raw`.

A handler takes a `Received` and returns a `Response` (or an awaitable of one):

- ``dns.message.Message``: sent as the reply (over UDP even if it exceeds the
  client's payload size; truncating is the test's job, see `Truncated`);
- ``bytes``: sent as they are (garbage, wrong IDs, ...);
- ``None``: no reply;
- ``Delay(seconds, then)``: *then* after a delay, without blocking other queries;
- ``WrongSource(then)``: *then* sent as UDP from another socket on the same host;
- a ``list`` of responses: each in order;
- ``Truncated()``: over UDP an empty reply with TC set; over TCP the default answer;
- ``Close()``: over TCP close the connection without answering; over UDP no reply.

Only loopback is used: the server binds *host* (127.0.0.1 or ::1) and replies to
whoever asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeAlias

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("tests.fakes")

_BIND_ATTEMPTS = 50


@dataclasses.dataclass(frozen=True)
class Received:
    """One query as the fake upstream received it."""

    transport: str  # "udp" | "tcp"
    wire: bytes
    message: dns.message.Message | None  # None if the wire did not parse
    source: tuple[str, int]


@dataclasses.dataclass(frozen=True)
class Delay:
    """Send *then* after *seconds*; other queries are answered meanwhile."""

    seconds: float
    then: Response


@dataclasses.dataclass(frozen=True)
class WrongSource:
    """Send *then* over UDP from another socket (another ephemeral port on the same host).

    Over TCP the datagram goes to the client's address, so nothing arrives on the connection.
    """

    then: Response


@dataclasses.dataclass(frozen=True)
class Truncated:
    """Over UDP: the query's question, no records, TC set. Over TCP: the default answer."""


@dataclasses.dataclass(frozen=True)
class Close:
    """Over TCP: close the connection without answering. Over UDP: no reply."""


Response: TypeAlias = (
    "dns.message.Message | bytes | Delay | WrongSource | Truncated | Close | list[Response] | None"
)
Handler: TypeAlias = Callable[[Received], "Response | Awaitable[Response]"]


# ---------------------------------------------------------------------------
# Building answers


def _parse_record(
    text: str, default_owner: dns.name.Name | None, rdclass: int
) -> tuple[dns.name.Name, dns.rdata.Rdata]:
    """Parse ``"TYPE RDATA..."`` (owner = *default_owner*) or ``"owner. TYPE RDATA..."``.

    Raises:
        ValueError: the text is empty, or names no owner and there is no default.
    """
    tokens = text.split(None, 1)
    if not tokens:
        raise ValueError("empty record text")
    first = tokens[0]
    is_type = not first.endswith(".")
    if is_type:
        try:
            dns.rdatatype.from_text(first)
        except dns.rdatatype.UnknownRdatatype:
            is_type = False
    if is_type:
        if default_owner is None:
            raise ValueError(f"record {text!r} has no owner and the query has no question")
        owner, rest = default_owner, text
    else:
        owner, rest = dns.name.from_text(first), tokens[1] if len(tokens) > 1 else ""
    rdtype_text, _, rdata_text = rest.strip().partition(" ")
    rdata = dns.rdata.from_text(
        rdclass,
        dns.rdatatype.from_text(rdtype_text),
        rdata_text.strip(),
        origin=dns.name.root,  # names in rdata are absolute, trailing dot or not
        relativize=False,
    )
    return owner, rdata


def _add_records(
    response: dns.message.Message,
    section: list[dns.rrset.RRset],
    records: Iterable[str],
    owner: dns.name.Name | None,
    rdclass: int,
    ttl: int,
) -> None:
    """Add record texts to *section*, merging records with the same owner and type."""
    for text in records:
        name, rdata = _parse_record(text, owner, rdclass)
        rrset = response.find_rrset(
            section, name, rdclass, rdata.rdtype, rdata.covers(), create=True
        )
        rrset.add(rdata, ttl)


def reply(
    query: dns.message.Message,
    *records: str,
    rcode: int = dns.rcode.NOERROR,
    ttl: int = 300,
    authority: Iterable[str] = (),
    additional: Iterable[str] = (),
) -> dns.message.Message:
    """Answer *query* with *records* in the answer section.

    A record is ``"TYPE RDATA..."`` (owned by the query name, e.g. ``"A 192.0.2.1"``) or
    ``"owner. TYPE RDATA..."`` (e.g. ``"www.example.com. CNAME s3.amazonaws.com."``).
    Records with the same owner and type form one RRset. EDNS (and its DO bit) follows
    the query.

    Raises:
        ValueError: a record has no owner and the query has no question.
        dns.exception.SyntaxError: a record's type or rdata does not parse.
    """
    response = dns.message.make_response(query)
    if query.ednsflags & dns.flags.DO:
        response.want_dnssec(True)  # RFC 3225: DO is copied into the response
    response.set_rcode(rcode)
    question = query.question[0] if query.question else None
    owner = question.name if question is not None else None
    rdclass = question.rdclass if question is not None else dns.rdataclass.IN
    _add_records(response, response.answer, records, owner, rdclass, ttl)
    _add_records(response, response.authority, authority, owner, rdclass, ttl)
    _add_records(response, response.additional, additional, owner, rdclass, ttl)
    return response


def default_handler(rx: Received) -> Response:
    """Answer A with ``192.0.2.1`` (TTL 300), anything else with an empty NOERROR.

    Unparsable queries get no reply; a query without a question gets FORMERR.
    """
    if rx.message is None:
        return None
    if not rx.message.question:
        return reply(rx.message, rcode=dns.rcode.FORMERR)
    if rx.message.question[0].rdtype == dns.rdatatype.A:
        return reply(rx.message, "A 192.0.2.1")
    return reply(rx.message)


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return name.lower().rstrip("."), rdtype.upper()


def answers(handler_map: dict[tuple[str, str], list[str] | int]) -> Handler:
    """Return a handler answering from ``{(qname, qtype): records | rcode}``.

    Keys are matched case-insensitively, with or without a trailing dot
    (``("www.example.com", "A")``). A list of record texts (see `reply`) gives NOERROR;
    an int gives that rcode with no records. Anything unmapped gets NXDOMAIN; an
    unparsable query gets no reply.
    """
    table = {_key(name, rdtype): value for (name, rdtype), value in handler_map.items()}

    def handle(rx: Received) -> Response:
        if rx.message is None:
            return None
        if not rx.message.question:
            return reply(rx.message, rcode=dns.rcode.FORMERR)
        q = rx.message.question[0]
        value = table.get(_key(q.name.to_text(), dns.rdatatype.to_text(q.rdtype)))
        if value is None:
            return reply(rx.message, rcode=dns.rcode.NXDOMAIN)
        if isinstance(value, int):
            return reply(rx.message, rcode=value)
        return reply(rx.message, *value)

    return handle


# ---------------------------------------------------------------------------
# The server


class _Target:
    """Where replies to one query go; `close` ends the connection (TCP only)."""

    async def send(self, wire: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection; nothing to do for datagrams."""


class _UdpTarget(_Target):
    def __init__(self, transport: asyncio.DatagramTransport, dest: tuple[str, int]) -> None:
        self._transport = transport
        self._dest = dest

    async def send(self, wire: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.sendto(wire, self._dest)


class _WrongSourceTarget(_Target):
    def __init__(self, host: str, dest: tuple[str, int]) -> None:
        self._host = host
        self._dest = dest

    async def send(self, wire: bytes) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((self._host, 0))
            # a plain send: one datagram on a fresh socket does not block, and uvloop has
            # no loop.sock_sendto
            sock.sendto(wire, self._dest)


class _TcpTarget(_Target):
    def __init__(self, writer: asyncio.StreamWriter, lock: asyncio.Lock) -> None:
        self._writer = writer
        self._lock = lock

    async def send(self, wire: bytes) -> None:
        async with self._lock:  # one frame at a time on the stream
            if self._writer.is_closing():
                return
            self._writer.write(struct.pack("!H", len(wire)) + wire)
            await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeUpstream) -> None:
        self._fake = fake
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self._transport is not None  # connection_made always comes first
        rx = self._fake._record("udp", data, addr)
        self._fake._spawn(self._fake._answer(rx, _UdpTarget(self._transport, addr)))

    def error_received(self, exc: Exception) -> None:
        log.debug("fake upstream udp error: %s", exc)  # e.g. ICMP from a client that left


class FakeUpstream:
    """A UDP+TCP DNS server on 127.0.0.1 (same port for both), whose answers the test controls.

    *handler* (default `default_handler`) may be replaced at any time; it is read for
    each query as it is handled. Every query is appended to `received` in arrival order,
    before the handler runs. Exceptions raised by the handler (or by sending its
    response) are logged and appended to `errors`; that query gets no reply.
    """

    def __init__(self, handler: Handler | None = None, host: str = "127.0.0.1") -> None:
        self.handler: Handler = handler if handler is not None else default_handler
        self.host = host
        self.port = 0
        self.received: list[Received] = []
        self.errors: list[BaseException] = []
        self._changed = asyncio.Event()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: dict[asyncio.StreamWriter, asyncio.Future[None]] = {}
        self._stopping = False

    @property
    def addr(self) -> str:
        """``"127.0.0.1:PORT"``, or ``"[::1]:PORT"`` for IPv6."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> FakeUpstream:
        """Bind UDP on an ephemeral port, then TCP on the same port, and start serving.

        Raises:
            OSError: no port was free for both after several attempts.
        """
        loop = asyncio.get_running_loop()
        self._stopping = False
        error: OSError | None = None
        for _ in range(_BIND_ATTEMPTS):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_connection, self.host, port)
            except OSError as e:  # TCP port taken: try another UDP port
                udp.close()
                error = e
                continue
            self._udp = udp  # type: ignore[assignment]
            self.port = port
            return self
        raise OSError(f"no port free for both UDP and TCP on {self.host}: {error}")

    async def stop(self) -> None:
        """Stop serving: close the sockets, cancel in-flight answers, close connections."""
        self._stopping = True
        if self._tcp is not None:
            self._tcp.close()  # stop accepting first
        if self._udp is not None:
            self._udp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Close connections rather than cancel their tasks: on 3.11, asyncio.streams logs
        # an error for a cancelled client_connected_cb task. Closing ends the read loop.
        for writer in self._connections:
            writer.close()
        if self._connections:
            await asyncio.gather(*self._connections.values(), return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        self._tcp = None
        self._udp = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least *n* queries have been received; return a copy of `received`.

        Raises:
            TimeoutError: (= asyncio.TimeoutError) fewer than *n* arrived within *timeout* seconds.
        """

        async def _until() -> None:
            while len(self.received) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_until(), timeout)
        return list(self.received)

    # -- receiving -----------------------------------------------------------

    def _record(self, transport: str, wire: bytes, source: tuple[str, int]) -> Received:
        try:
            message: dns.message.Message | None = dns.message.from_wire(wire)
        except Exception:  # any parse failure: the test sees message=None
            message = None
        rx = Received(transport, wire, message, (source[0], source[1]))
        self.received.append(rx)
        self._changed.set()
        return rx

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one TCP connection with RFC 7766 framing, answering queries concurrently."""
        if self._stopping:  # accepted just before stop() closed the listener
            writer.close()
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._connections[writer] = done
        peer = writer.get_extra_info("peername")
        target = _TcpTarget(writer, asyncio.Lock())
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                if self._stopping:  # stop() is cancelling answers; start no more
                    break
                rx = self._record("tcp", wire, peer)
                answer = self._spawn(self._answer(rx, target))
                pending.add(answer)
                answer.add_done_callback(pending.discard)
            if pending:  # the client may half-close and still wait for its answers
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            del self._connections[writer]
            done.set_result(None)
            writer.close()

    # -- answering -----------------------------------------------------------

    async def _answer(self, rx: Received, target: _Target) -> None:
        try:
            response = await _call(self.handler, rx)
            await self._emit(rx, response, target)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("fake upstream %s: handler failed for %s query", self.addr, rx.transport)
            self.errors.append(e)

    async def _emit(self, rx: Received, response: Response, target: _Target) -> None:
        """Carry out *response* for *rx* towards *target*.

        Raises:
            TypeError: *response* is not one of the Response types.
        """
        if response is None:
            return
        if isinstance(response, (bytes, bytearray, memoryview)):
            await target.send(bytes(response))
        elif isinstance(response, dns.message.Message):
            await target.send(response.to_wire())
        elif isinstance(response, Delay):
            await asyncio.sleep(response.seconds)
            await self._emit(rx, response.then, target)
        elif isinstance(response, (list, tuple)):
            for item in response:
                await self._emit(rx, item, target)
        elif isinstance(response, WrongSource):
            await self._emit(rx, response.then, _WrongSourceTarget(self.host, rx.source))
        elif isinstance(response, Truncated):
            if rx.transport == "tcp":
                await self._emit(rx, await _call(default_handler, rx), target)
            elif rx.message is not None:
                truncated = dns.message.make_response(rx.message)
                truncated.flags |= dns.flags.TC
                await target.send(truncated.to_wire())
        elif isinstance(response, Close):
            target.close()
        else:
            raise TypeError(f"handler returned {type(response).__name__}, not a Response")


async def _call(handler: Handler, rx: Received) -> Response:
    result = handler(rx)
    if inspect.isawaitable(result):
        result = await result
    return result  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Raw clients


class _FirstDatagram(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


async def udp_raw(addr: tuple[str, int], payload: bytes, timeout: float = 2.0) -> bytes | None:
    """Send *payload* as one datagram from a fresh socket; return the first reply, or None.

    The socket is connected to *addr*, so only replies from *addr* count.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_FirstDatagram, remote_addr=addr)
    try:
        transport.sendto(payload)
        return await asyncio.wait_for(protocol.reply, timeout)
    except TimeoutError:
        return None
    finally:
        transport.close()


async def tcp_raw(addr: tuple[str, int], payload: bytes, timeout: float = 2.0) -> bytes | None:
    """Send *payload* framed (2-byte length) on a new connection; return the first framed reply.

    Returns None on timeout or if the server closes the connection first.
    """

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(addr[0], addr[1])
        try:
            writer.write(struct.pack("!H", len(payload)) + payload)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
