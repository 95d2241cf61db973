"""The listening sockets: one function opens a UDP or TCP socket for a configured listener,
the same way for both (family from the address, IPv6 v6-only, SO_REUSEPORT for workers,
non-blocking)."""

from __future__ import annotations

import contextlib
import socket

from forwarder.config.model import Listener

TCP_BACKLOG = 1024


def bind(listener: Listener, kind: socket.SocketKind, reuse_port: bool = False,
         buffer_size: int = 0) -> socket.socket:
    """Binds a non-blocking socket of *kind* (SOCK_DGRAM or SOCK_STREAM, listening) for
    *listener*; *buffer_size* sets SO_RCVBUF and SO_SNDBUF when not 0. Raises OSError."""
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if buffer_size:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                # the kernel caps this at net.core.rmem_max/wmem_max; a smaller one still works
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
        sock.bind((listener.address, listener.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(TCP_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
