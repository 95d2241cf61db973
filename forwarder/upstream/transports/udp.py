"""UDP exchange: a fresh socket per query (the kernel picks a random source port), connected
to the server so only its address and port can answer; the ID and question are checked too."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from forwarder import wire


async def exchange(
    host: str, port: int, query: bytes, ident: int, qname: bytes, qtype: int, qclass: int,
    timeout: float, on_mismatch: Callable[[], None],
) -> bytes:
    """Sends *query* and answers the first matching reply.

    Raises:
        TimeoutError: nothing matching arrived within *timeout*.
        OSError: the network refused (e.g. ICMP port unreachable: ConnectionRefusedError).
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect((host, port))
        sock.send(query)
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(sock, 65_535)
                if wire.reply_matches(data, ident, qname, qtype, qclass):
                    return data
                on_mismatch()
    finally:
        sock.close()
