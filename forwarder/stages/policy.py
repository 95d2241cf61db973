"""Answer policy: judge forwarded answers for protected names and rewrite, block, strip, fall back or monitor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config import model

if TYPE_CHECKING:
    from forwarder.runtime import Runtime


def build(cfg: model.Config, rt: Runtime, previous: Runtime | None) -> None:
    """Sets `rt.policies` for *cfg* (left empty when the config does not use it)."""
