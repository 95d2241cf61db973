"""The transport registry: each `transport:` name and how a group reaches one of its
servers over it (`attach`). udp and tcp ask on a fresh socket or connection each time;
tls and https keep a persistent, verified connection per server. A Group holds the links
its configuration made (`links`); health probes of a bare server use `open_link`."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Protocol

from forwarder import metrics
from forwarder.config import model
from forwarder.upstream.transports import https, secure, tcp, tls, udp
from forwarder.upstream.transports.base import Fresh, Transport, TransportError

__all__ = ["REGISTRY", "Transport", "TransportError", "links", "open_link"]


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


def open_link(group: model.UpstreamGroup, server: model.Server,
              on_mismatch: Callable[[], None] = lambda: None) -> Transport:
    """A Transport to *server* over *group*'s transport."""
    return REGISTRY[group.transport](group, server, _context(group), on_mismatch)


def links(group: model.UpstreamGroup, servers: list[model.Server]) -> dict[str, Transport]:
    """A Transport to each of *servers* over *group*'s transport, by server label, with
    one TLS context for the group. Encrypted links connect on first use."""
    ctx = _context(group)
    factory = REGISTRY[group.transport]
    return {s.label: factory(group, s, ctx, _mismatch(group.name, s.label)) for s in servers}


def _context(group: model.UpstreamGroup) -> ssl.SSLContext | None:
    if group.transport not in model.ENCRYPTED:
        return None
    return secure.context(group, ALPN[group.transport])


def _mismatch(group: str, label: str) -> Callable[[], None]:
    """Counts a reply that is not ours (wrong ID or question) for that server."""
    return metrics.upstream_errors.labels(group, label, "mismatch").inc
