"""Runtime: the live object graph built from one Config (acl, router, groups, stages), and
RuntimeHolder, the one reference the server swaps atomically on reload.

`build` is the one place a Runtime is assembled. Stages a config does not use are not
built (None): they cost nothing on the query path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from forwarder import querylog
from forwarder.aws import advice
from forwarder.config import model
from forwarder.hooks import runner as hook_runner
from forwarder.stages import cache as cache_stage
from forwarder.stages import local, policy, ratelimit
from forwarder.stages.acl import Acl
from forwarder.stages.front import WireFront
from forwarder.stages.policy import guard
from forwarder.stages.policy import zones as policy_zones
from forwarder.stages.router import Router
from forwarder.upstream.group import Group, ServerState

if TYPE_CHECKING:
    from forwarder.aws.inventory import Inventory

log = logging.getLogger("forwarder")


@dataclass(eq=False)
class Runtime:
    config: model.Config
    acl: Acl
    router: Router
    groups: dict[str, Group]
    local: dict[int, local.LocalZone]  # by rule index
    policies: dict[str, policy.AnswerPolicy]
    protection: guard.Protection  # which policy judges which answer
    cache: cache_stage.Cache | None
    hooks: hook_runner.HookChain | None
    rate_limiter: ratelimit.RateLimiter | None
    querylog: querylog.QueryLog | None
    # the cache's wire front, when no stage must see every query (stages/front.py)
    front: WireFront | None
    inventory: Inventory | None = None  # the AWS inventory *config* was made concrete with

    def close(self) -> None:
        """Releases what this runtime owns once no query uses it any more."""
        if self.querylog is not None and self.querylog.owner is self:
            self.querylog.close()  # not when a reload handed it on to the next runtime
        if self.cache is not None:
            self.cache.release(self)  # closes it unless a newer runtime shares it
        for group in self.groups.values():
            group.close()  # its tls/https connections, once their queries are over


def preload() -> None:
    """Imports everything serving needs, so that a process that dropped privileges does not
    depend on reading the Python installation afterwards."""
    import encodings.idna  # noqa: F401  (asyncio encodes host names when it binds HTTP)

    from forwarder.listeners import http  # noqa: F401
    from forwarder.upstream import health  # noqa: F401


def build(cfg: model.Config, previous: Runtime | None = None,
          inventory: Inventory | None = None) -> Runtime:
    """Builds the live objects for *cfg*; upstream server state (health, RTT), the cache,
    rate-limit buckets and the query log carry over from *previous* where they still fit.
    With an `aws:` section, *inventory* fills in its references first (the runtime's
    `config` is then that concrete configuration). Raises ConfigError when a part cannot
    be built (a hook file, a hosts file, the query log's file, the ip ranges). Gateway
    entries of `allowed` are filled in from the inventory or the ip ranges."""
    diagnosed = None
    if cfg.aws is not None:
        from forwarder.aws import diagnosis, gateway, rules

        ranges = diagnosis.load_ranges(cfg)
        cfg = gateway.apply(rules.apply(cfg, inventory), inventory, ranges)
        diagnosed = diagnosis.build(cfg, inventory, ranges)
    explain = advice.build(cfg, diagnosed).explain
    router = Router(cfg.rules)
    groups = _groups(cfg, previous)
    zones = local.zones(cfg)
    policies = policy.build(cfg, explain)
    protection = judged_zones(cfg, policies, router, groups, zones)
    hooks = hook_runner.build(cfg, router, groups, protection.judge_made)
    cache = cache_stage.build(cfg, previous.cache if previous else None,
                              previous.config if previous else None)
    log = querylog.build(cfg, previous.querylog if previous else None)
    rt = Runtime(
        config=cfg,
        acl=Acl(cfg.acl),
        router=router,
        groups=groups,
        local=zones,
        policies=policies,
        protection=protection,
        cache=cache,
        hooks=hooks,
        rate_limiter=ratelimit.build(cfg, previous.rate_limiter if previous else None),
        querylog=log,
        front=None,
        inventory=inventory,
    )
    if cache is not None:
        cache.adopt(rt)
    if log is not None:
        log.owner = rt
    rt.front = _front(rt)
    return rt


def judged_zones(cfg: model.Config, policies: dict[str, policy.AnswerPolicy], router: Router,
                 groups: dict[str, Group] | None, zones: dict[int, local.LocalZone],
                 ) -> guard.Protection:
    """The configuration's Protection, once its local answers have been judged (raises
    ConfigError for one that breaks an enforcing policy); logs those a counting one lets
    through."""
    protection, warnings = policy_zones.protection(cfg, policies, router, groups, zones)
    for w in warnings:
        p = cfg.positions.locate(w)
        log.warning("%s: %s: %s", p.where(cfg.source), p.path, p.reason)
    return protection


def _groups(cfg: model.Config, previous: Runtime | None) -> dict[str, Group]:
    groups = {}
    for g in cfg.upstreams:
        old = previous.groups.get(g.name) if previous else None
        servers = None
        if old is not None:
            by_label = {s.label: s for s in old.servers}
            servers = [by_label.get(s.label) or ServerState(g.name, s) for s in g.servers]
        groups[g.name] = Group(g, servers, g.max_inflight or cfg.limits.max_inflight)
    return groups


def _front(rt: Runtime) -> WireFront | None:
    """The cache's wire front, or None when a stage says it must see every query."""
    cache = rt.cache
    if cache is None:
        return None
    stages = (rt.rate_limiter, rt.hooks, rt.router, cache, rt.querylog)
    if any(stage is not None and stage.sees_every_query for stage in stages):
        return None
    return cache.front


class RuntimeHolder:
    """Holds the current Runtime; `swap` is a single assignment, so a query that already
    read `current` finishes on the runtime it started with."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime | None) -> None:
        # None only between Server(build=False) and Server.start(), before any query
        self.current: Runtime = runtime  # type: ignore[assignment]

    def swap(self, runtime: Runtime) -> Runtime:
        old, self.current = self.current, runtime
        return old
