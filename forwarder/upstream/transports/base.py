"""What every upstream transport offers (`Transport`), how an encrypted one says why it
failed (`TransportError`), and EDNS padding of queries sent over an encrypted channel."""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from typing import Protocol

OPTION_PADDING = 12  # RFC 7830
PAD_BLOCK = 128  # RFC 8467: pad queries to a multiple of 128 octets


class Transport(Protocol):
    """One upstream server reached over one transport (udp, tcp, tls, https)."""

    name: str

    async def exchange(self, query: bytes, qname: bytes, qtype: int, qclass: int,
                       timeout: float) -> bytes:
        """Sends *query* (the transport sets its ID) and answers the reply whose ID and
        question match.

        Raises:
            TimeoutError: no matching reply within *timeout*.
            TransportError: an encrypted transport failed (certificate, HTTP status, ...).
            OSError: the network or the server failed.
        """
        ...

    def close(self) -> None:
        """Closes idle connections now and the others once their queries are over."""
        ...


class Exchange(Protocol):
    async def __call__(self, host: str, port: int, query: bytes, ident: int, qname: bytes,
                       qtype: int, qclass: int, timeout: float,
                       on_mismatch: Callable[[], None]) -> bytes: ...


class Fresh:
    """Transport udp or tcp for one server: a new socket or connection and a random ID
    for each exchange (what health probes use; the group sends forwarded UDP queries
    through the server's UdpPool)."""

    def __init__(self, name: str, exchange: Exchange, host: str, port: int,
                 on_mismatch: Callable[[], None]) -> None:
        self.name = name
        self._exchange = exchange
        self.host = host
        self.port = port
        self.on_mismatch = on_mismatch

    async def exchange(self, query: bytes, qname: bytes, qtype: int, qclass: int,
                       timeout: float) -> bytes:
        ident = secrets.randbits(16)
        return await self._exchange(self.host, self.port, ident.to_bytes(2, "big") + query[2:],
                                    ident, qname, qtype, qclass, timeout, self.on_mismatch)

    def close(self) -> None:
        pass


class TransportError(OSError):
    """An upstream exchange failed for a reason worth naming to the client and in metrics:
    *kind* is the metric label (certificate, pin, handshake, handshake_timeout,
    http_status, http, connection), *reason* the text (it names the server)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def pad(query: bytes, block: int = PAD_BLOCK) -> bytes:
    """*query* (as wire.upstream_query builds it: our OPT record last, with no options)
    with an EDNS Padding option that makes its length a multiple of *block* (RFC 7830,
    RFC 8467's block-length padding), so its size says little about the name asked."""
    fill = -(len(query) + 4) % block
    return query[:-2] + struct.pack("!HHH", 4 + fill, OPTION_PADDING, fill) + bytes(fill)
