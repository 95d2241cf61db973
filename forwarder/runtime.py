"""Runtime: the live object graph built from one Config (acl, router, groups, stages), and
RuntimeHolder, the one reference the server swaps atomically on reload.

Stages a config does not use are not built (None): they cost nothing on the query path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from forwarder.config import model
from forwarder.query import Query, Reply
from forwarder.stages.acl import Acl
from forwarder.stages.router import Router
from forwarder.upstream.group import Group, ServerState


class LocalZone(Protocol):
    def answer(self, q: Query) -> Reply: ...


class AnswerPolicy(Protocol):
    async def apply(self, q: Query, reply: Reply, group: Group, runtime: Runtime) -> Reply: ...

    def decide(self, q: Query, reply: Reply, group: str) -> Any: ...

    async def enforce(self, q: Query, violation: Any, group: Group,
                      runtime: Runtime) -> Reply: ...


@dataclass(eq=False)
class Runtime:
    config: model.Config
    acl: Acl
    router: Router
    groups: dict[str, Group]
    local: dict[int, LocalZone] = field(default_factory=dict)  # by rule index
    policies: dict[str, AnswerPolicy] = field(default_factory=dict)
    cache: Any = None  # stages.cache.Cache
    hooks: Any = None  # hooks.HookChain
    rate_limiter: Any = None  # stages.ratelimit.RateLimiter
    querylog: Any = None  # querylog.QueryLog
    # the cache's wire front when every query may skip the pipeline on a repeat hit
    wire_front: dict[bytes, Any] | None = None  # stages.cache.FrontEntry values

    def close(self) -> None:
        """Releases what this runtime owns once no query uses it any more."""
        if self.querylog is not None and self.querylog.owner is self:
            self.querylog.close()  # not when a reload handed it on to the next runtime
        if self.cache is not None:
            self.cache.release(self)  # closes it unless a newer runtime shares it


def preload() -> None:
    """Imports everything building a runtime and serving needs, so that a process that
    dropped privileges does not depend on reading the Python installation afterwards."""
    import encodings.idna  # noqa: F401  (asyncio encodes host names when it binds HTTP)

    _builders()
    from forwarder.listeners import http  # noqa: F401
    from forwarder.upstream import health  # noqa: F401


def _builders() -> tuple[Any, ...]:
    """The optional parts, in build order: each takes (config, runtime, previous), sets its
    attribute of the runtime (or leaves it None), and raises ConfigError when it cannot."""
    from forwarder import hooks, querylog
    from forwarder.stages import cache, local, policy, ratelimit

    return (local.build, policy.build, cache.build, ratelimit.build, hooks.build, querylog.build)


def build(cfg: model.Config, previous: Runtime | None = None) -> Runtime:
    """Builds the live objects for *cfg*; upstream server state (health, RTT) carries over
    from *previous* for servers that stay. Raises ConfigError when a part cannot be built."""
    groups = {}
    for g in cfg.upstreams:
        old = previous.groups.get(g.name) if previous else None
        servers = None
        if old is not None:
            by_label = {s.label: s for s in old.servers}
            servers = [by_label.get(s.label) or ServerState(g.name, s) for s in g.servers]
        groups[g.name] = Group(g, servers)
    rt = Runtime(config=cfg, acl=Acl(cfg.acl), router=Router(cfg.rules), groups=groups)
    for builder in _builders():
        builder(cfg, rt, previous)
    rt.wire_front = wire_front(rt)
    return rt


def wire_front(rt: Runtime) -> dict[bytes, Any] | None:
    """The cache's wire front, or None when some stage must see every query: hooks, the
    rate limit, the query log, prefetch (counts hits), or rules that match client networks
    (the same bytes could then route differently for different clients)."""
    cache = rt.cache
    if (cache is None or rt.hooks is not None or rt.rate_limiter is not None
            or rt.querylog is not None or cache.settings.prefetch
            or not rt.router.client_independent):
        return None
    return cache.front  # type: ignore[no-any-return]


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
