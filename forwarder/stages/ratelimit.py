"""Per-client rate limiting (token buckets by /32 and /56)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config import model

if TYPE_CHECKING:
    from forwarder.runtime import Runtime


def build(cfg: model.Config, rt: Runtime, previous: Runtime | None) -> None:
    """Sets `rt.rate_limiter` for *cfg* (left empty when the config does not use it)."""
