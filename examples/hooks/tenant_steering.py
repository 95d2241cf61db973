"""Steer each tenant's subnet to its own resolver group.

A tenant behind 10.20.0.0/16 has its own Route 53 Resolver inbound endpoint (its own
private hosted zones and PrivateLink endpoints); everyone else uses the groups the zone
rules name. The answer policy of the matching zone rule still applies.

    hooks:
      - path: hooks/tenant_steering.py
        options:
          tenants:
            - {networks: [10.20.0.0/16], group: tenant-b-inbound}
            - {networks: [10.30.0.0/16, "fd00:30::/32"], group: tenant-c-inbound,
               zones: [amazonaws.com, tenant-c.internal]}

`zones` (optional) limits the steering to names under those suffixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forwarder.hooks import Context, Continue, QueryVerdict, Reroute, networks

TENANTS: list[tuple[Any, str, tuple[str, ...]]] = []


def setup(options: Mapping[str, Any]) -> None:
    """Compiles the tenant table once per (re)load; a mistake rejects the configuration."""
    table = []
    for i, tenant in enumerate(options.get("tenants") or ()):
        if not isinstance(tenant, dict) or "networks" not in tenant or "group" not in tenant:
            raise ValueError(f"tenants[{i}] needs networks and group")
        table.append((networks(*tenant["networks"]), str(tenant["group"]),
                      tuple(tenant.get("zones") or ())))
    TENANTS[:] = table


def on_query(ctx: Context) -> QueryVerdict:
    for nets, group, zones in TENANTS:
        if not ctx.in_networks(ctx.client, nets):
            continue
        if zones and not any(ctx.is_subdomain(ctx.qname, zone) for zone in zones):
            continue
        ctx.tag("tenant_group", group)
        return Reroute(group)
    return Continue()
