"""TCP exchange (RFC 7766 framing): used when a UDP reply is truncated or the group says tcp."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from forwarder.dns import wire


async def exchange(
    host: str, port: int, query: bytes, ident: int, qname: bytes, qtype: int, qclass: int,
    timeout: float, on_mismatch: Callable[[], None],
) -> bytes:
    """Sends *query* framed on a new connection and answers the matching reply.

    Raises:
        TimeoutError: no matching reply within *timeout*.
        OSError: connecting or reading failed, or the server closed the connection.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            while True:
                try:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("upstream closed the TCP connection") from None
                if wire.reply_matches(data, ident, qname, qtype, qclass):
                    return data
                on_mismatch()
        finally:
            writer.close()
