"""JSON query log: one line per query, written off the event loop through a bounded queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config import model

if TYPE_CHECKING:
    from forwarder.runtime import Runtime


def build(cfg: model.Config, rt: Runtime, previous: Runtime | None) -> None:
    """Sets `rt.querylog` for *cfg* (left empty when the config does not use it)."""
