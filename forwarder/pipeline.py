"""Pipeline: the fixed order of stages a query passes through, and the one error boundary.

    rate limit -> acl -> hooks.on_query -> router -> refuse | local records -> cache
        -> upstream group (coalesced) -> answer policy -> hooks.on_response -> cache store

`fast` runs the synchronous front (everything up to a cache hit) without creating a task;
`resolve` runs the rest. Users configure what each stage does, never the order.
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
from forwarder.query import Query, Reply, error_reply
from forwarder.runtime import Runtime, RuntimeHolder
from forwarder.upstream.group import Attempts, FirstTry, Group

log = logging.getLogger("forwarder")

class Pipeline:
    """Resolves queries against the current Runtime of a RuntimeHolder."""

    def __init__(self, holder: RuntimeHolder) -> None:
        self.holder = holder
        self.upstream_inflight = 0
        self.inflight = 0  # queries in resolve(): folded into the gauge on collection
        self._inflight_reported = 0
        metrics.PENDING.flushers.add(self)

    def flush(self) -> None:
        """Brings forwarder_inflight_queries up to date (called on collection); by the
        change since the last report, so the gauge sums every pipeline in the process."""
        change = self.inflight - self._inflight_reported
        if change:
            metrics.inflight.inc(change)
            self._inflight_reported = self.inflight

    def fast(self, q: Query) -> Reply | None:
        """Answers from the synchronous stages, or None when `resolve` must run."""
        rt = self.holder.current
        q.runtime = rt
        if rt.rate_limiter is not None:  # first: it bounds the ACL's refusals too
            limited = rt.rate_limiter.check(q)
            if limited is not None:
                return limited
        if not rt.acl.allows(q.client[0]):
            metrics.acl_refused.inc()
            return error_reply(q, wire.Rcode.REFUSED, wire.Ede.PROHIBITED,
                               "client not allowed by acl", by="acl")
        if q.edns_version:
            return error_reply(q, wire.Rcode.BADVERS, by="edns")
        if rt.hooks is not None:
            return None
        return self._front(rt, q)

    def _front(self, rt: Runtime, q: Query) -> Reply | None:
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
            return rt.local[rule.index].answer(q)
        if rt.cache is not None:
            return rt.cache.get(q)
        return None

    async def resolve(self, q: Query) -> Reply:
        """Runs the asynchronous stages; the single place where failures become SERVFAIL."""
        rt: Runtime = q.runtime or self.holder.current
        self.inflight += 1
        try:
            return await self._resolve(rt, q)
        except Exception as e:
            return self._failure(rt, q, e)
        finally:
            self.inflight -= 1

    def _failure(self, rt: Runtime, q: Query, error: Exception) -> Reply:
        """The reply for a query whose resolution raised *error*."""
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

    def forward(self, q: Query, client: Client) -> bool:
        """Starts resolving a query `fast` left unanswered without a task of its own, when
        nothing on its way needs one: no hooks, not explaining, a UDP upstream group and
        a cache miss no identical query is fetching already. The upstream's first reply
        is judged, stored and answered from the socket's reader callback; anything else
        (a failed try, a policy action) goes on in a task from where it stands. *client*
        gets exactly one `reply`. Answers False, having done nothing, when `resolve` must
        run instead."""
        rt: Runtime = q.runtime
        rule = q.rule
        if rt.hooks is not None or q.trace is not None or rule is None or rule.upstream is None:
            return False
        cache = rt.cache
        key = q.key
        if cache is not None and (key is None or cache.fetching(key)):
            return False
        if self.upstream_inflight >= rt.config.limits.max_inflight:
            return False  # resolve() answers the overload
        miss = _Miss(self, q, client)
        if not rt.groups[rule.upstream].start(q, miss):
            return False
        if cache is not None:
            miss.pending = cache.begin(key, q)  # type: ignore[arg-type]
        q.group = rule.upstream
        self.inflight += 1
        self.upstream_inflight += 1
        return True

    async def _resolve(self, rt: Runtime, q: Query) -> Reply:
        if rt.hooks is not None:
            verdict = await rt.hooks.on_query(q)
            if verdict is not None:
                return verdict
            if _rerouted_off_rule(q):
                # no forwarding rule to key the cache on: ask the group directly, without
                # reading or filling the cache (and so without a stale answer)
                try:
                    reply = await self._fetch(rt, q, store=False)
                except UpstreamError as e:
                    q.note(f"upstream failed: {e.text}")
                    return error_reply(q, wire.Rcode.SERVFAIL, e.ede_code, e.text)
                return await rt.hooks.on_response(q, reply)
            front = self._front(rt, q)
            if front is not None:
                if q.rule is None or q.rule.action is RuleAction.REFUSE:
                    return front  # the forwarder's own refusal, not an answer
                return await rt.hooks.on_response(q, front)  # cache hit or local records
        rule = q.rule
        assert rule is not None and rule.upstream is not None
        if rt.cache is not None:
            reply = await rt.cache.coalesce(q, lambda: self._fetch(rt, q))
        else:
            reply = await self._fetch(rt, q)
        if rt.hooks is not None:
            reply = await rt.hooks.on_response(q, reply)
        return reply

    async def _fetch(self, rt: Runtime, q: Query, store: bool = True,
                     state: Attempts | None = None) -> Reply:
        """Asks the upstream group and applies the rule's answer policy (and caches it).
        With *state*, the tries `forward` began go on (its miss holds the upstream slot and
        releases it)."""
        rule = q.rule  # None only for a query a hook rerouted
        q.group = q.group or (rule.upstream if rule is not None else None)
        group = rt.groups[q.group]  # type: ignore[index]
        if state is None:
            if self.upstream_inflight >= rt.config.limits.max_inflight:
                metrics.dropped.labels("inflight_limit").inc()
                return error_reply(q, wire.Rcode.SERVFAIL, wire.Ede.OTHER,
                                   "forwarder overloaded: too many upstream queries in flight")
            self.upstream_inflight += 1
        try:
            reply = await group.exchange(q, state)
        finally:
            if state is None:
                self.upstream_inflight -= 1
        return await self._conclude(rt, q, self._judge(rt, q, reply, group), group, store)

    @staticmethod
    async def _conclude(rt: Runtime, q: Query, judged: Reply | Any, group: Group,
                        store: bool = True) -> Reply:
        """Carries out the policy action on a violation `_judge` found, and caches what
        the client gets."""
        if not isinstance(judged, Reply):
            judged = await rt.policies[q.rule.policy].enforce(q, judged, group, rt)  # type: ignore[union-attr]
        if rt.cache is not None and store:
            rt.cache.put(q, judged)
        return judged

    @staticmethod
    def _judge(rt: Runtime, q: Query, reply: Reply, group: Group) -> Reply | Any:
        """Records the upstream *reply* on *q* and judges it by the rule's answer policy:
        the reply for the client, or a violation the policy must `enforce`."""
        q.server = reply.server
        q.upstream_rcode = reply.rcode
        q.upstream_reply = reply
        rule = q.rule
        if rule is None or rule.policy is None:
            return reply
        return rt.policies[rule.policy].decide(q, reply, group.name)


class Client(Protocol):
    """Where `Pipeline.forward` delivers: the listener the query came in on."""

    def reply(self, q: Query, reply: Reply | None) -> None:
        """Sends *reply*; None: the query ends without one (its task was cancelled)."""

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...


class _Miss(FirstTry):
    """A query `Pipeline.forward` resolves without a task, and its first upstream try:
    the group calls `replied` with that try's outcome."""

    __slots__ = ("client", "holding", "over", "pending", "pipeline", "q")

    def __init__(self, pipeline: Pipeline, q: Query, client: Client) -> None:
        self.pipeline = pipeline
        self.q = q
        self.client = client
        self.pending: Any = None  # the cache's in-flight mark for the key (stages.cache)
        self.holding = True  # one of the pipeline's upstream slots (limits.max_inflight)
        self.over = False  # answered, or given up

    def replied(self, reply: Reply | None, state: Attempts) -> None:
        if reply is None:  # the first try failed: the other tries go on in a task
            self._go_on(self._finish(state=state))
            return
        self._release()
        pipeline, q = self.pipeline, self.q
        rt: Runtime = q.runtime
        try:
            judged = pipeline._judge(rt, q, reply, self.group)
            if not isinstance(judged, Reply):  # a policy action: rewrite, fallback, ...
                self._go_on(self._finish(violation=judged))
                return
            if rt.cache is not None:
                rt.cache.put(q, judged)
        except Exception as e:
            self._done(pipeline._failure(rt, q, e), e)
            return
        self._done(judged)

    def broke(self, error: Exception) -> None:
        self._release()
        if self.over:
            raise error  # it was answered already: the loop's handler logs it
        self._done(self.pipeline._failure(self.q.runtime, self.q, error), error)

    def _release(self) -> None:
        if self.holding:
            self.holding = False
            self.pipeline.upstream_inflight -= 1

    def _go_on(self, work: Coroutine[Any, Any, None]) -> None:
        self.client.spawn(work).add_done_callback(self._task_over)

    def _task_over(self, _task: asyncio.Task[None]) -> None:
        """A task that went on with the query is over; if it was cancelled (even before it
        started), the query ends here: identical queries waiting on it fetch themselves."""
        self._release()
        if not self.over:
            self.over = True
            q = self.q
            if self.pending is not None:
                q.runtime.cache.abandon(q.key, self.pending)
            self.pipeline.inflight -= 1
            self.client.reply(q, None)

    async def _finish(self, state: Attempts | None = None, violation: Any = None) -> None:
        pipeline, q = self.pipeline, self.q
        rt: Runtime = q.runtime
        try:
            if violation is None:
                try:
                    reply = await pipeline._fetch(rt, q, state=state)
                finally:
                    self._release()
            else:
                reply = await pipeline._conclude(rt, q, violation, self.group)
        except Exception as e:
            self._done(pipeline._failure(rt, q, e), e)
            return
        self._done(reply)

    def _done(self, reply: Reply, error: Exception | None = None) -> None:
        self.over = True
        q = self.q
        if self.pending is not None:
            q.runtime.cache.settle(q.key, self.pending, None if error else reply, error)
        self.pipeline.inflight -= 1
        self.client.reply(q, reply)


def _rerouted_off_rule(q: Query) -> bool:
    """Answers whether a hook rerouted *q* although no rule matched or its rule does not
    forward (a rerouted query of a forwarding rule takes the usual path: the cache is
    keyed on the group asked)."""
    if q.group is None:
        return False
    return q.rule is None or q.rule.action is not RuleAction.FORWARD


class Accounting:
    """Counts each answered query once: queries, responses by rcode, and latency.

    Counts go into plain dicts on the query path and are folded into the Prometheus
    metrics whenever the registry is collected (metrics.PENDING), so answering a query costs
    a dict update instead of three locked metric updates.
    """

    __slots__ = ("__weakref__", "_counts", "_dropped", "_latency")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, int], int] = {}
        self._dropped: dict[tuple[str, str, str], int] = {}  # queries that got no response
        self._latency: dict[tuple[str, str], metrics.HistogramCounts] = {}
        metrics.PENDING.flushers.add(self)

    def record(self, q: Query, reply: Reply, now: float) -> None:
        rule = q.rule.name if q.rule is not None else "none"
        self.count(q.transport, rule, q.qtype, reply.rcode, now - q.received)
        rt = q.runtime
        if rt is not None and rt.querylog is not None:
            rt.querylog.record(q, reply, now)

    def count(self, transport: str, rule: str, qtype: int, rcode: int, seconds: float,
              n: int = 1) -> None:
        """Counts *n* answered queries that took *seconds* each."""
        key = (transport, rule, metrics.qtype_label(qtype), rcode)
        counts = self._counts
        counts[key] = counts.get(key, 0) + n
        latency = self._latency.get((transport, rule))
        if latency is None:
            latency = self._latency[(transport, rule)] = metrics.HistogramCounts(
                metrics.request_duration.labels(transport, rule))
        latency.observe(seconds, n)

    def flush(self) -> None:
        """Folds the counts kept since the last flush into the Prometheus metrics."""
        counts, self._counts = self._counts, {}
        for (transport, rule, qtype, rcode), n in counts.items():
            metrics.queries.labels(transport, rule, qtype).inc(n)
            metrics.responses.labels(transport, rule, metrics.rcode_label(rcode)).inc(n)
        dropped, self._dropped = self._dropped, {}
        for labels, n in dropped.items():
            metrics.queries.labels(*labels).inc(n)
        for latency in self._latency.values():
            latency.flush()

    def dropped(self, q: Query) -> None:
        """Counts a query that gets no response at all (a rate limit or hook verdict)."""
        rule = q.rule.name if q.rule is not None else "none"
        key = (q.transport, rule, metrics.qtype_label(q.qtype))
        self._dropped[key] = self._dropped.get(key, 0) + 1
