"""HTTP endpoints: /metrics, /healthz and /readyz on `metrics.listen`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forwarder.server import Server, Service


def service(server: Server) -> Service | None:
    """Answers the background service for *server*, or None when it is not configured."""
    return None
