"""Local records (issue: answer policy): static A/AAAA/CNAME/TXT answers from YAML `records` and `hosts_file`, authoritative NXDOMAIN/NODATA with SOA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from forwarder.config import model

if TYPE_CHECKING:
    from forwarder.runtime import Runtime


def build(cfg: model.Config, rt: Runtime, previous: Runtime | None) -> None:
    """Sets `rt.local` for *cfg* (left empty when the config does not use it)."""
