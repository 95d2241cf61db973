"""The transport registry: each `transport:` name and how a group reaches one of its
servers over it (`attach`). udp and tcp ask on a fresh socket or connection each time;
tls and https keep a persistent, verified connection per server."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Protocol

from forwarder.config import model
from forwarder.upstream.transports import https, secure, tcp, tls, udp
from forwarder.upstream.transports.base import Fresh, Transport, TransportError

__all__ = ["REGISTRY", "Transport", "TransportError", "attach", "open_link"]


class Factory(Protocol):
    def __call__(self, group: model.UpstreamGroup, server: model.Server,
                 ctx: ssl.SSLContext | None, on_mismatch: Callable[[], None]) -> Transport: ...


REGISTRY: dict[str, Factory] = {
    "udp": lambda g, s, ctx, m: Fresh("udp", udp.exchange, s.host, s.port, m),
    "tcp": lambda g, s, ctx, m: Fresh("tcp", tcp.exchange, s.host, s.port, m),
    "tls": lambda g, s, ctx, m: tls.TlsTransport(g, s, ctx, m),  # type: ignore[arg-type]
    "https": lambda g, s, ctx, m: https.HttpsTransport(g, s, ctx),  # type: ignore[arg-type]
}
ALPN = {"tls": None, "https": ["h2"]}


class Linked(Protocol):
    """What `attach` needs of a server's run-time state (upstream.group.ServerState)."""

    server: model.Server
    link: Transport | None

    def count_mismatch(self) -> None: ...


def open_link(group: model.UpstreamGroup, server: model.Server,
              on_mismatch: Callable[[], None] = lambda: None) -> Transport:
    """A Transport to *server* over *group*'s transport."""
    ctx = secure.context(group, ALPN[group.transport]) \
        if group.transport in model.ENCRYPTED else None
    return REGISTRY[group.transport](group, server, ctx, on_mismatch)


def attach(group: model.UpstreamGroup, states: list[Linked]) -> None:
    """Gives each server of *group* a fresh Transport for this configuration (one TLS
    context for the group); a link an earlier configuration left is closed gently, once
    its queries are over."""
    ctx = secure.context(group, ALPN[group.transport]) \
        if group.transport in model.ENCRYPTED else None
    factory = REGISTRY[group.transport]
    for state in states:
        old = state.link
        state.link = factory(group, state.server, ctx, state.count_mismatch)
        if old is not None:
            old.close()
