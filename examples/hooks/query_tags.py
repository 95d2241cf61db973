"""Enrich the query log: tag each query with the site its client is in, and its answer.

Tags set with `ctx.tag(key, value)` appear in the query's query-log entry under "tags",
so the log can be filtered by site or by what was answered:

    hooks:
      - path: hooks/query_tags.py
        options:
          sites:
            tokyo-dc: [10.1.0.0/16]
            osaka-dc: [10.2.0.0/16, "fd00:2::/32"]
          default_site: unknown

    querylog:
      enabled: true
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forwarder.hooks import Context, Response, networks

SITES: list[tuple[str, Any]] = []
DEFAULT: dict[str, str] = {"site": "unknown"}


def setup(options: Mapping[str, Any]) -> None:
    sites = options.get("sites") or {}
    if not isinstance(sites, dict):
        raise ValueError("options.sites maps a site name to a list of networks")
    SITES[:] = [(str(site), networks(*nets)) for site, nets in sites.items()]
    DEFAULT["site"] = str(options.get("default_site", "unknown"))


def on_query(ctx: Context) -> None:
    site = next((name for name, nets in SITES if ctx.in_networks(ctx.client, nets)),
                DEFAULT["site"])
    ctx.tag("site", site)
    if ctx.rule is not None:
        ctx.tag("zone_rule", ctx.rule)


def on_response(ctx: Context, response: Response) -> None:
    ctx.tag("answer_from", response.answered_by)
    if response.rcode == "NOERROR":
        ctx.tag("addresses", len(response.addresses))
