"""Operators' Python hooks: verdict types, loading hook files, calling on_query/on_response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config import model

if TYPE_CHECKING:
    from forwarder.runtime import Runtime


def build(cfg: model.Config, rt: Runtime, previous: Runtime | None) -> None:
    """Sets `rt.hooks` for *cfg* (left empty when the config does not use it)."""
