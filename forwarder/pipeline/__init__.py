"""Pipeline: the fixed order of stages a query passes through, and the one error boundary.

    rate limit -> acl -> edns -> hooks.on_query -> router -> refuse | local records
        -> cache -> upstream group (identical queries share one fetch) -> answer policy
        -> hooks.on_response -> cache store

A local answer whose CNAME chain leaves its zone goes on as a resolution too: the target
is resolved through the rule that routes it (pipeline/chase.py).

Listeners hand each query to `Pipeline.handle` and get a reply at once (everything up to
a cache hit is synchronous: no task, no await) or None: then the query goes on as a
`Resolution` (pipeline/resolution.py), which answers the listener exactly once through
`Client.reply`. Users configure what each stage does, never the order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from forwarder import metrics
from forwarder.config.model import RuleAction
from forwarder.dns import wire
from forwarder.errors import HookError, UpstreamError
from forwarder.pipeline.accounting import Accounting
from forwarder.pipeline.resolution import Resolution
from forwarder.query import Query, Reply, error_reply
from forwarder.runtime import Runtime, RuntimeHolder
from forwarder.stages.local import Leaving

__all__ = ["Accounting", "Client", "Pipeline"]

log = logging.getLogger("forwarder")


class Client(Protocol):
    """Where a query that `Pipeline.handle` did not answer at once is answered: the
    listener (or connection) it came in on."""

    def reply(self, q: Query, reply: Reply | None) -> None:
        """Sends *reply* (DROP: nothing); None: the query ended without one (its
        resolution was cancelled)."""


class Pipeline:
    """Resolves queries against the current Runtime of a RuntimeHolder."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder
        self.inflight = 0  # queries being resolved: folded into the gauge on collection
        self.tasks: set[asyncio.Task[None]] = set()  # resolutions that went on in a task
        self._inflight_reported = 0
        self._idle: asyncio.Future[None] | None = None  # drain() waits on it
        metrics.PENDING.flushers.add(self)

    def flush(self) -> None:
        """Brings forwarder_inflight_queries up to date (called on collection); by the
        change since the last report, so the gauge sums every pipeline in the process."""
        change = self.inflight - self._inflight_reported
        if change:
            metrics.inflight.inc(change)
            self._inflight_reported = self.inflight

    # --- the query path ------------------------------------------------------------------

    def handle(self, q: Query, client: Client) -> Reply | None:
        """Answers *q* at once (a Reply, or DROP: send nothing), or None when the query goes
        on: *client* then gets exactly one `reply` for it."""
        rt = self.holder.current
        q.runtime = rt
        reply = self.admit(rt, q)
        if reply is None and rt.hooks is None:
            reply = self.answer_here(rt, q)
        if reply is not None:
            return reply
        Resolution(self, rt, q, client).start()
        return None

    def admit(self, rt: Runtime, q: Query) -> Reply | None:
        """The stages every query passes first: the rate limit (first: it bounds the ACL's
        refusals too), the ACL, the EDNS version. A reply ends the query."""
        if rt.rate_limiter is not None:
            limited = rt.rate_limiter.check(q)
            if limited is not None:
                return limited
        if not rt.acl.allows(q.client[0]):
            metrics.acl_refused.inc()
            return error_reply(q, wire.Rcode.REFUSED, wire.Ede.PROHIBITED,
                               "client not allowed by acl", by="acl")
        if q.edns_version:
            return error_reply(q, wire.Rcode.BADVERS, by="edns")
        return None

    def answer_here(self, rt: Runtime, q: Query) -> Reply | None:
        """The synchronous stages after the hooks: the zone rule (refuse, local records)
        and the cache. None: the query must go upstream, or its local CNAME chain leaves
        the zone (a Resolution follows it)."""
        rule = q.rule or rt.router.route(q.qname, q.qtype, q.client[0])
        if rule is None:
            q.note("no zone rule matches: REFUSED")
            return error_reply(q, wire.Rcode.REFUSED, wire.Ede.PROHIBITED,
                               "no zone rule matches this name", by="router")
        q.rule = rule
        if q.trace is not None:  # no formatting on the hit path unless explaining
            q.note(f"rule zones[{rule.index}] match {rule.match!r} -> {rule.action.value}")
        if rule.action is RuleAction.REFUSE:
            return error_reply(q, wire.Rcode.REFUSED, wire.Ede.PROHIBITED,
                               f"refused by rule {rule.name}", by="router")
        if rule.action is RuleAction.LOCAL:
            reply = rt.local[rule.index].answer(q)
            return None if type(reply) is Leaving else reply
        if rt.cache is not None:
            return rt.cache.get(q)
        return None

    async def resolve(self, q: Query) -> Reply:
        """Answers *q* however long it takes (`forwarder explain` and tests): `handle`,
        awaited."""
        done: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()

        class _Waiting:
            def reply(self, _q: Query, reply: Reply | None) -> None:
                if not done.done():
                    done.set_result(reply)

        reply = self.handle(q, _Waiting())
        if reply is None:
            reply = await done
            if reply is None:
                raise asyncio.CancelledError
        return reply

    # --- the error boundary ----------------------------------------------------------------

    def failure(self, rt: Runtime, q: Query, error: BaseException) -> Reply:
        """The reply for a query whose resolution raised *error*: the one place where
        failures become SERVFAIL."""
        if isinstance(error, UpstreamError):
            stale = rt.cache.stale(q) if rt.cache is not None else None
            if stale is not None:
                return stale
            q.note(f"upstream failed: {error.text}")
            return error_reply(q, wire.Rcode.SERVFAIL, error.ede_code, error.text)
        if isinstance(error, HookError):
            metrics.hook_errors.labels(error.hook, error.kind).inc()
            return error_reply(q, wire.Rcode.SERVFAIL, wire.Ede.OTHER, error.text, by="hook")
        log.error("internal error on %s %s", q.name, q.type_name, exc_info=error)
        metrics.internal_errors.inc()
        return error_reply(q, wire.Rcode.SERVFAIL, wire.Ede.OTHER, "internal error")

    # --- lifetime ----------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Runs *work* (the rest of a resolution) as a task `drain` waits for."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def ended(self) -> None:
        """A resolution ended (each raises `inflight` as it starts and calls this once)."""
        self.inflight -= 1
        if not self.inflight and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def drain(self) -> None:
        """Waits until every query being resolved has ended."""
        while self.inflight:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
