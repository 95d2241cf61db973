"""Wire-format answer cache: TTL ageing, negative caching (RFC 2308), serve-stale (RFC 8767), coalescing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config import model

if TYPE_CHECKING:
    from forwarder.runtime import Runtime


def build(cfg: model.Config, rt: Runtime, previous: Runtime | None) -> None:
    """Sets `rt.cache` for *cfg* (left empty when the config does not use it)."""
