"""Fetches in flight, by cache key: identical queries share one upstream fetch, and an
expired answer is served while a fetch is slow or after it failed (RFC 8767).

A query that finds no fresh answer either fetches itself (`begin` ... `settle`, marked so
that identical queries arriving meanwhile wait on it), or waits on the fetch already in
flight. `share` does all of it for a query in a task; the task-free miss path calls
`begin` and `settle` itself. When an expired answer can still be served, the fetch runs
in a background task instead, so that a query waiting longer than stale_client_timeout
gets the expired answer (EDE 3) while the fetch goes on and refreshes the entry. After a
failed refresh the cache answers stale at once for stale_ttl seconds (the RFC's failure
recheck timer). Prefetch refreshes a popular entry the same way before it expires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from forwarder import metrics
from forwarder.errors import UpstreamError
from forwarder.query import Query, Reply

if TYPE_CHECKING:
    from forwarder.stages.cache import Cache

log = logging.getLogger("forwarder")

SERVFAIL = 2
RECHECK_LIMIT = 4096  # failed refreshes remembered before expired ones are swept
Fetch = Callable[[], Awaitable[Reply]]


class _OwnerGone(Exception):
    """The query fetching for a key was cancelled; its waiters fetch again themselves."""


class Flight:
    """An upstream fetch in flight for one key, and how many queries wait on it: a task of
    its own, or (for a query fetching for itself) a future made when the first identical
    query comes to wait, which the fetching query settles."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future[Reply] | None) -> None:
        self.task = task
        self.waiters = 0

    def future(self) -> asyncio.Future[Reply]:
        """What waiters await."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_future()
        return self.task


class Flights:
    """The fetches in flight for one cache's keys."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._flights: dict[bytes, Flight] = {}
        # failed refreshes: the cache answers stale until then (RFC 8767's recheck timer)
        self.recheck: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def fetching(self, key: bytes) -> bool:
        """Answers whether a fetch for *key* is in flight (a query would wait on it)."""
        return key in self._flights

    def begin(self, key: bytes) -> Flight:
        """Marks *key* as being fetched by the asking query itself, which calls `settle`
        once it has the reply (or failed); identical queries wait for that meanwhile.
        The caller checks that no fetch for *key* is in flight."""
        flight = self._flights[key] = Flight(None)
        return flight

    def settle(self, key: bytes, flight: Flight, reply: Reply | None = None,
               error: BaseException | None = None) -> None:
        """Ends a fetch `begin` marked: gives its outcome to the queries waiting on it."""
        future = flight.task
        if future is not None and not future.done():
            if error is None:
                future.set_result(reply)  # type: ignore[arg-type]
            else:
                future.set_exception(error)
                if not flight.waiters:
                    future.exception()  # retrieved: nobody waits any more
        self._ended(key, flight, reply, error)

    def abandon(self, key: bytes, flight: Flight) -> None:
        """Ends a fetch `begin` marked whose query was cancelled: its waiters fetch again."""
        self.settle(key, flight, error=_OwnerGone())

    async def share(self, q: Query, fetch: Fetch) -> Reply:
        """Answers *q* through *fetch* (upstream, policy and cache store), sharing one fetch
        among identical queries in flight, and serving stale when the fetch fails or is
        slow (see the module docstring). Raises what *fetch* raises (UpstreamError) for
        the caller's error boundary, which then asks the cache for a stale answer."""
        cache = self.cache
        key = cache.key(q)
        if key is None:
            return await fetch()
        now = cache.clock()
        fresh, refresh = cache.fresh(key, now)
        if fresh is not None:  # get() left it for a prefetch, or it arrived since get()
            if refresh:
                self._start(key, fetch)
            return fresh
        flight = self._flights.get(key)
        stale = cache.servable(key, now)
        if flight is None and stale is None:
            return await self._fetch_inline(key, fetch)
        if flight is None:
            flight = self._start(key, fetch)
        else:
            metrics.cache_coalesced.inc()
        task = flight.future()
        flight.waiters += 1
        try:
            if stale is not None:
                await asyncio.wait((task,), timeout=cache.settings.stale_client_timeout)
                if not task.done():
                    return cache.stale_reply(key, stale)
            reply = await asyncio.shield(task)
        except _OwnerGone:
            return await self.share(q, fetch)  # the query that fetched was cancelled
        finally:
            flight.waiters -= 1
        if reply.rcode == SERVFAIL and reply.answered_by != "policy":
            served = cache.stale(q)
            if served is not None:
                return served
        return reply

    async def _fetch_inline(self, key: bytes, fetch: Fetch) -> Reply:
        """Fetches in the asking query's own task (no task of its own: the common miss),
        publishing the result for identical queries that arrive meanwhile. A background
        task is only needed when a stale answer may have to be served while it runs."""
        flight = self.begin(key)
        try:
            reply = await fetch()
        except asyncio.CancelledError:
            self.settle(key, flight, error=_OwnerGone())
            raise
        except BaseException as e:
            self.settle(key, flight, error=e)
            raise
        self.settle(key, flight, reply)
        return reply

    def _start(self, key: bytes, fetch: Fetch) -> Flight:
        task = asyncio.ensure_future(fetch())
        flight = Flight(task)
        self._flights[key] = flight
        task.add_done_callback(functools.partial(self._fetched, key, flight))
        return flight

    def _fetched(self, key: bytes, flight: Flight, task: asyncio.Future[Reply]) -> None:
        """Done callback of a background fetch (`_start`)."""
        if task.cancelled():
            if self._flights.get(key) is flight:
                del self._flights[key]
            return
        exc = task.exception()  # also marks it retrieved when nobody waits any more
        if exc is not None and not isinstance(exc, (UpstreamError, _OwnerGone)) \
                and flight.waiters == 0:
            log.error("background cache refresh failed", exc_info=exc)
        self._ended(key, flight, task.result() if exc is None else None, exc)

    def _ended(self, key: bytes, flight: Flight, reply: Reply | None,
               error: BaseException | None) -> None:
        """A fetch is over: no longer in flight, and the cache learns whether the name's
        upstreams failed (RFC 8767's failure recheck)."""
        if self._flights.get(key) is flight:
            del self._flights[key]
        if isinstance(error, _OwnerGone):
            return
        if error is None:
            failed = reply.rcode == SERVFAIL and reply.answered_by != "policy"  # type: ignore[union-attr]
        else:
            failed = True
        cache = self.cache
        if failed and cache.settings.serve_stale and not cache.closed:
            now = cache.clock()
            if cache.servable(key, now) is not None:  # else nothing to serve
                if len(self.recheck) >= RECHECK_LIMIT:
                    self._prune_recheck(now)
                self.recheck[key] = now + cache.settings.stale_ttl
        elif self.recheck:
            self.recheck.pop(key, None)

    def _prune_recheck(self, now: float) -> None:
        self.recheck = {k: t for k, t in self.recheck.items() if t > now}
        if len(self.recheck) >= RECHECK_LIMIT // 2:  # a wide outage: keep the sweep rare
            self.recheck.clear()

    async def wait_idle(self) -> None:
        """Waits until no fetch (for queries or a background refresh) is in flight."""
        while self._flights:
            tasks = [f.future() for f in self._flights.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        """Cancels background refreshes nobody waits for; fetches that queries still wait
        on finish by themselves (bounded by the group budget)."""
        for flight in list(self._flights.values()):
            if flight.waiters == 0 and isinstance(flight.task, asyncio.Task):
                flight.task.cancel()  # a background refresh (a query's own fetch goes on)
        self.recheck.clear()
