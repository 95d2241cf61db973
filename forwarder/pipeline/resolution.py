"""Resolution: one query that `Pipeline.handle` could not answer at once, from there to
its one reply. It owns everything the query holds while it is resolved: its count in the
pipeline (for draining and the in-flight gauge), its place in its upstream group's
budget, and its mark in the cache's table of fetches in flight (identical queries wait
on it).

Most resolutions never need a task: when nothing on the way can wait (no hooks, not
explaining, a UDP upstream group, no identical query already fetching), the first upstream
try is made from the listener's reader callback, and the upstream socket's reader
callback judges, stores and answers the reply (`replied`). Anything else (a failed try,
a policy action that must ask again, hooks) goes on in a task, from where it stands.
Either way the step after an upstream answer (judge, enforce, store) is `_conclude`, and
the end is `_done`. A local answer whose CNAME chain leaves its zone is followed in a task
(pipeline/chase.py), each target resolved by a Resolution of its own (`target`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from forwarder import metrics
from forwarder.config.model import RuleAction
from forwarder.dns import wire
from forwarder.errors import UpstreamError
from forwarder.pipeline.chase import follow as follow_cname
from forwarder.query import Query, Reply, error_reply
from forwarder.runtime import Runtime
from forwarder.upstream.group import Attempts, FirstTry, Group

if TYPE_CHECKING:
    from forwarder.pipeline import Client, Pipeline
    from forwarder.stages.policy.judge import Case

Violation = tuple["Case", str]  # what AnswerPolicy.decide answers when it must act


class Resolution(FirstTry):
    """One query on its way upstream (and back). Also the group's waiter for its first
    UDP try (FirstTry), so the task-free path allocates nothing else."""

    __slots__ = ("client", "entered", "fetches", "flight", "over", "own", "pipeline", "q",
                 "rt")

    def __init__(self, pipeline: Pipeline, rt: Runtime, q: Query, client: Client) -> None:
        self.pipeline = pipeline
        self.rt = rt
        self.q = q
        self.client = client
        self.entered: Group | None = None  # the group whose budget this query counts in ...
        self.own = False  # ... while the query itself is not over, ...
        self.fetches = 0  # ... or a fetch it started goes on (a background refresh)
        self.flight: Any = None  # the cache's in-flight mark this query settles
        self.over = False  # answered, or given up

    def start(self) -> None:
        self.pipeline.inflight += 1  # until _done or _task_over: Pipeline.ended
        if not self._try_now():
            self._go_on(self._run())

    # --- the task-free path ------------------------------------------------------------------

    def _try_now(self) -> bool:
        """Makes the first upstream try from here when nothing on the way needs a task;
        answers False, having done nothing, otherwise."""
        rt, q = self.rt, self.q
        rule = q.rule
        if rt.hooks is not None or q.trace is not None or rule is None or rule.upstream is None:
            return False
        cache = rt.cache
        key = q.key
        if cache is not None and (key is None or cache.flights.fetching(key)):
            return False  # the task path waits on the fetch in flight
        group = rt.groups[rule.upstream]
        if not self._enter(group):
            return False  # the task path answers the overload
        if not group.start(q, self):
            self._leave()
            return False
        if cache is not None:
            self.flight = cache.flights.begin(key)  # type: ignore[arg-type]
        q.group = rule.upstream
        return True

    def replied(self, reply: Reply | None, state: Attempts) -> None:
        """The first try's outcome (FirstTry): a usable reply, or None (the state says why
        that try failed: the other tries go on in a task)."""
        if reply is None:
            self._go_on(self._rest(state=state))
            return
        try:
            judged = self._judge(reply, self.group)
            if not isinstance(judged, Reply):  # a policy action: rewrite, fallback, ...
                self._go_on(self._rest(violation=judged, upstream=reply))
                return
            self._store(reply, judged)
        except Exception as e:
            self._done(self.pipeline.failure(self.rt, self.q, e), e)
            return
        self._done(judged)

    def broke(self, error: Exception) -> None:
        """A bug while the first try's outcome was handled: the query still ends."""
        if self.over:
            raise error  # it was answered already: the loop's handler logs it
        self._done(self.pipeline.failure(self.rt, self.q, error), error)

    async def _rest(self, state: Attempts | None = None, violation: Violation | None = None,
                    upstream: Reply | None = None) -> None:
        """What is left after the first try: the other tries, or the policy's action."""
        try:
            if violation is None:
                reply = await self._fetch(state=state)
            else:
                reply = await self._enforce(violation, upstream, self.group)  # type: ignore[arg-type]
        except Exception as e:
            self._done(self.pipeline.failure(self.rt, self.q, e), e)
            return
        self._done(reply)

    # --- the task path -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            reply = await self._resolve()
        except Exception as e:
            reply = self.pipeline.failure(self.rt, self.q, e)
        self._done(reply)

    async def _resolve(self) -> Reply:
        rt, q = self.rt, self.q
        hooks = rt.hooks
        if hooks is not None:
            verdict = await hooks.on_query(q)
            if verdict is not None:
                return verdict
            if _rerouted_off_rule(q):
                # no forwarding rule to key the cache on: ask the group directly, without
                # reading or filling the cache (and so without a stale answer)
                try:
                    reply = await self._upstream(store=False)
                except UpstreamError as e:
                    q.note(f"upstream failed: {e.text}")
                    return error_reply(q, wire.Rcode.SERVFAIL, e.ede_code, e.text)
                return await hooks.on_response(q, reply)
            here = self.pipeline.answer_here(rt, q)
            if here is not None:
                if q.rule is None or q.rule.action is RuleAction.REFUSE:
                    return here  # the forwarder's own refusal, not an answer
                return await hooks.on_response(q, here)  # cache hit or local records
        if q.rule is not None and q.rule.action is RuleAction.LOCAL:
            reply = await follow_cname(self)  # a local CNAME chain leaves its zone
        else:
            reply = await self._upstream()
        if hooks is not None:
            reply = await hooks.on_response(q, reply)
        return reply

    async def target(self) -> Reply:
        """Answers this query, a CNAME target followed for another one (chase.follow), as
        its own forwarding rule would: refusal, the cache, the upstream group and the rule's
        policy (no hooks). A failure is its reply (SERVFAIL, or a stale answer)."""
        try:
            here = self.pipeline.answer_here(self.rt, self.q)
            if here is not None:
                return here
            return await self._upstream()
        except Exception as e:
            return self.pipeline.failure(self.rt, self.q, e)
        finally:
            self._leave()

    async def _upstream(self, store: bool = True) -> Reply:
        """The answer from the query's upstream group (shared with identical queries in
        flight, through the cache), judged by the policy. Raises UpstreamError."""
        rt, q = self.rt, self.q
        rule = q.rule  # None only for a query a hook rerouted
        q.group = q.group or (rule.upstream if rule is not None else None)
        group = rt.groups[q.group]  # type: ignore[index]
        if not self._enter(group):
            stale = rt.cache.stale(q) if rt.cache is not None else None
            if stale is not None:  # an outage is what serve-stale is for
                return stale
            metrics.dropped.labels("inflight_limit").inc()
            return error_reply(q, wire.Rcode.SERVFAIL, wire.Ede.OTHER,
                               f"forwarder overloaded: {group.budget} queries in flight to "
                               f"upstream group {group.name}")
        if rt.cache is not None and store:
            return await rt.cache.flights.share(q, self._fetch)
        return await self._fetch(store=store)

    async def _fetch(self, store: bool = True, state: Attempts | None = None) -> Reply:
        """Asks the group (going on from *state* after a first try) and concludes. The
        fetch keeps the query's place in the group's budget while it runs, also when it
        outlives the query (a background refresh after a stale answer, a prefetch)."""
        group = self.rt.groups[self.q.group]  # type: ignore[index]
        self.fetches += 1
        try:
            reply = await group.exchange(self.q, state)
            judged = self._judge(reply, group)
            if not isinstance(judged, Reply):
                return await self._enforce(judged, reply, group, store)
            if store:
                self._store(reply, judged)
            return judged
        finally:
            self.fetches -= 1
            self._release()

    # --- after an upstream answer: judge, enforce, store --------------------------------------

    def _judge(self, reply: Reply, group: Group) -> Reply | Violation:
        """The answer policy that judges the query's answers (policy/guard.py) on the
        upstream *reply*: the reply for the client, or a violation the policy must
        `enforce`."""
        decide = self.rt.protection.judge_of(self.q)
        if decide is None:
            return reply
        return decide(self.q, reply, group.name)

    async def _enforce(self, violation: Violation, upstream: Reply, group: Group,
                       store: bool = True) -> Reply:
        """Carries out the policy's action on a violation `_judge` found (and stores what
        the client gets)."""
        policy = self.rt.protection.enforcer(self.q, violation)
        judged = await policy.enforce(self.q, violation, group, self.rt.groups)
        if store:
            self._store(upstream, judged)
        return judged

    def _store(self, upstream: Reply, judged: Reply) -> None:
        """Caches what the client gets; a reply the policy made remembers the upstream's."""
        if judged is not upstream:
            judged.upstream = upstream
        cache = self.rt.cache
        if cache is not None:
            cache.put(self.q, judged)

    # --- the end -------------------------------------------------------------------------------

    def _enter(self, group: Group) -> bool:
        """Counts this query in *group*'s budget (limits.max_inflight, or the group's own
        max_inflight); answers False when the budget is spent."""
        if self.entered is not None:
            return True
        if group.load >= group.budget:
            return False
        group.load += 1
        self.entered = group
        self.own = True
        return True

    def _leave(self) -> None:
        """The query is over: its place in the budget goes once no fetch of it runs."""
        if self.own:
            self.own = False
            self._release()

    def _release(self) -> None:
        group = self.entered
        if group is not None and not self.own and not self.fetches:
            self.entered = None
            group.load -= 1

    def _go_on(self, work: Coroutine[Any, Any, None]) -> None:
        self.pipeline.spawn(work).add_done_callback(self._task_over)

    def _task_over(self, _task: asyncio.Task[None]) -> None:
        """A task that went on with the query is over; if it was cancelled (even before it
        started), the query ends here: identical queries waiting on it fetch themselves."""
        if not self.over:
            self.over = True
            if self.flight is not None:
                self.rt.cache.flights.abandon(self.q.key, self.flight)  # type: ignore[union-attr]
            self._leave()
            self.pipeline.ended()
            self.client.reply(self.q, None)

    def _done(self, reply: Reply, error: BaseException | None = None) -> None:
        self.over = True
        if self.flight is not None:
            self.rt.cache.flights.settle(  # type: ignore[union-attr]
                self.q.key, self.flight, None if error else reply, error)
        self._leave()
        self.pipeline.ended()
        self.client.reply(self.q, reply)


def _rerouted_off_rule(q: Query) -> bool:
    """Answers whether a hook rerouted *q* although no rule matched or its rule does not
    forward (a rerouted query of a forwarding rule takes the usual path: the cache is
    keyed on the group asked)."""
    if q.group is None:
        return False
    return q.rule is None or q.rule.action is not RuleAction.FORWARD
