"""Wire-format answer cache: TTL ageing, negative caching (RFC 2308), serve-stale (RFC 8767),
coalescing of identical in-flight queries, and optional prefetch.

The cache holds answers *after* the answer policy, so a blocked or rewritten answer comes
back from the cache the same way, Extended DNS Errors included. An entry is the internal
reply wire (no OPT record) plus the offset of every TTL field in it: a hit patches those
TTLs for the entry's age and nothing else; the listener then patches the client's ID,
question case (0x20) and OPT, and truncates to the client's buffer. No message is parsed on
a hit, and hits within the same second of an entry's age share one Reply object.

Key: (query name lower-cased, type, class, DO, CD), plus the zone rule's index and the
upstream group asked, because rules can match on client networks and hooks can reroute.
The key bytes are the lower-cased question plus those extras, so an entry stores its wire
without the question and rebuilds it from the key when a hit needs it.

What is cached, and for how long:

- NOERROR with answers: each record's TTL is clamped to [min_ttl, max_ttl] (clients see the
  clamped TTLs); the entry lives for the smallest TTL of the answer and authority records.
- NXDOMAIN, and NOERROR without answers (NODATA): min(SOA TTL, SOA MINIMUM) of the SOA in
  the authority section, capped by max_negative_ttl (RFC 2308 section 5); record TTLs are
  lowered to it. min_ttl does not lengthen negative answers. A negative answer without an
  SOA is not cached (RFC 2308 section 5: SHOULD NOT).
- SERVFAIL from upstreams: servfail_ttl seconds (0: never). It never replaces an entry that
  can still be served stale.
- Answers the answer policy made (answered_by "policy") that carry no TTL of their own
  (blocked with REFUSED or SERVFAIL, or NXDOMAIN/NODATA without SOA): the policy's `ttl`.
- Never: answers over MAX_ENTRY_BYTES (4 KiB, which only TCP can carry: this bounds the
  cache's memory by max_entries); truncated replies; FORMERR, NOTIMP, REFUSED and other
  rcodes from upstreams; answers whose TTL works out at 0; replies that cannot be walked
  or whose question is not the query's.

Ages count in whole seconds of the monotonic clock, so an entry may expire up to a second
early, never late.

Serve-stale (RFC 8767): an expired entry stays servable for max_stale seconds. When a fetch
fails (every upstream failed, or only SERVFAIL came back) or does not finish within
stale_client_timeout, the client gets the expired answer with every TTL set to stale_ttl
and EDE 3 (Stale Answer, answered_by "stale"); the fetch goes on in the background and
refreshes the entry. After a failed refresh, the name is answered stale at once for
stale_ttl seconds (the RFC's failure recheck timer) instead of waiting on upstreams again.

Prefetch (off by default): an entry hit at least twice and asked again when less than 10% of
its TTL is left is answered from the cache while a background fetch refreshes it.

Eviction is LRU within max_entries; expired entries past their stale window are dropped
when looked up.

The wire front (UDP only): once a hit has been answered, the exact bytes the client sent
(minus the ID) map to the exact bytes it got (minus the ID) until the entry expires. A
repeat of the same query is answered by one dict lookup and an ID patch, without reading
the question; in a later second the front lowers the TTLs itself first (FrontEntry). Once
the entry expires the ordinary lookup runs again (serve-stale, refresh). Front hits do
not move an entry up the LRU order; an entry evicted meanwhile is still served from the
front until it expires, which is still a correct answer. The runtime uses the
front only when nothing else needs to see each query (no hooks, rate limit, query log,
prefetch, or client-network rules): see Runtime.wire_front.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import wire
from forwarder.errors import FormError, UpstreamError
from forwarder.query import Query, Reply

if TYPE_CHECKING:
    from forwarder.runtime import Runtime

log = logging.getLogger("forwarder")
T = TypeVar("T")

TTL = struct.Struct("!I")
KEY_EXTRA = struct.Struct("!HHBHH")  # qtype, qclass, DO<<1|CD, rule index, group id
KEY_TAIL = 5  # bytes of KEY_EXTRA after qtype and qclass: key[:-KEY_TAIL] is the question
STALE_EDE = (int(wire.Ede.STALE_ANSWER), "serving an expired answer: upstreams did not answer")
PREFETCH_MIN_HITS = 2  # an entry hit this often is popular enough to refresh early
PREFETCH_WINDOW = 0.1  # refresh once less than this fraction of the TTL remains
RECHECK_LIMIT = 4096  # failed refreshes remembered before expired ones are swept
DEFAULT_POLICY_TTL = 30
MAX_ENTRY_BYTES = 4096  # bigger answers (TCP only) are not cached: memory stays bounded
FRONT_LIMIT = 10_000  # distinct query byte strings remembered per second at most
FRONT_MAX_QUERY = 512  # longer queries (padding, many options) are not remembered
SHARED_LIMIT = 65_536  # TTL values and policy verdicts entries share
SHARED_OFFSETS_LIMIT = 4096  # answer shapes whose TTL offsets entries share ...
SHARED_OFFSETS_MAX_LEN = 8  # ... for answers of at most this many records
NOERROR = int(wire.Rcode.NOERROR)
NXDOMAIN = int(wire.Rcode.NXDOMAIN)
SERVFAIL = int(wire.Rcode.SERVFAIL)

Fetch = Callable[[], Awaitable[Reply]]


# A cache entry is a plain tuple: (body, offsets, ede, stored, ttl, judged, age, hits).
# CPython's collector stops tracking a tuple that holds only bytes, numbers, text and such
# tuples, so entries cost a full collection nothing; as objects they were all tracked, and
# with 100,000 entries each full collection stopped the loop for 60-90 ms. A change stores
# a new tuple.
#   body     the stored wire without its question (the key holds it), its TTLs as of `age`
#            seconds after it was stored; a hit ages it further (TTLs only go down) and
#            puts the question back. No Reply object is kept: that would cost memory.
#   offsets  of every TTL in the whole message (question included)
#   ede      the reply's Extended DNS Errors
#   stored   the whole second it was stored in; `ttl`: how many seconds it is fresh
#   judged   the policy's (verdict, action) on the answer, for the query log
#   hits     hits while fresh, for prefetch
Entry = tuple[bytes, tuple[int, ...], tuple[tuple[int, str], ...], int, int,
              tuple[str | None, str | None], int, int]
E_BODY, E_OFFSETS, E_EDE, E_STORED, E_TTL, E_JUDGED, E_AGE, E_HITS = range(8)


def _rcode(entry: Entry) -> int:
    return entry[E_BODY][3] & 0xF


def _shared(table: dict[T, T], value: T, limit: int) -> T:
    """*value*, or the equal one *table* gave out before, so that entries share one object
    (less memory); the table starts over once it holds *limit* values."""
    if len(table) >= limit:
        table.clear()
    return table.setdefault(value, value)


class FrontEntry:
    """The reply bytes (after the ID) sent for one query's bytes, as of `second`; `age_to`
    lowers its TTLs for a later second, the way the cache entry it came from ages."""

    __slots__ = ("accounting", "offsets", "second", "tail", "until")

    def __init__(self, tail: bytes, second: int, until: int, offsets: tuple[int, ...],
                 accounting: tuple[str, int, int]) -> None:
        self.tail = tail
        self.second = second
        self.until = until  # the first second the entry is no longer fresh
        self.offsets = offsets  # of every TTL in the whole message (the reply has the same
        # layout as the cached wire: same question length, OPT appended at the end)
        self.accounting = accounting  # (rule, qtype, rcode) for the query counters

    def age_to(self, second: int) -> bytes | None:
        """The bytes for *second*, or None once the entry has expired (the cache decides
        what happens then: serve stale, refresh)."""
        if second >= self.until or second < self.second:
            return None
        buf = bytearray(self.tail)
        delta = second - self.second
        unpack, pack = TTL.unpack_from, TTL.pack_into
        for off in self.offsets:
            ttl = unpack(buf, off - 2)[0] - delta
            pack(buf, off - 2, ttl if ttl > 0 else 0)
        self.tail = bytes(buf)
        self.second = second
        return self.tail


class _OwnerGone(Exception):
    """The query fetching for a key was cancelled; its waiters fetch again themselves."""


class _Fetch:
    """An upstream fetch in flight for one key, and how many queries wait on it: a task of
    its own, or (for a query fetching for itself) a future made when the first identical
    query comes to wait, which the fetching query settles."""

    __slots__ = ("owner", "task", "waiters")

    def __init__(self, task: asyncio.Future[Reply] | None, owner: Query) -> None:
        self.task = task
        self.owner = owner  # the query fetching: waiters log its upstream and verdict
        self.waiters = 0

    def future(self) -> asyncio.Future[Reply]:
        """What waiters await."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_future()
        return self.task


class Cache:
    """The answer cache of one runtime (shared with the next one when a reload keeps the
    cache settings, rules, policies and upstream groups)."""

    def __init__(self, cfg: model.Config,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = cfg.cache
        self.clock = clock
        self.closed = False
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._inflight: dict[bytes, _Fetch] = {}
        self._recheck: dict[bytes, float] = {}  # failed refreshes: answer stale until then
        self._groups = {g.name: i + 1 for i, g in enumerate(cfg.upstreams)}
        self._policy_ttl = {p.name: p.ttl for p in cfg.policies}
        self._owners: weakref.WeakSet[Runtime] = weakref.WeakSet()
        self._prefetch = cfg.cache.prefetch
        self._second = 0  # one int object per second: entries stored in it share it
        self._ints: dict[int, int] = {}  # TTL values shared between entries
        self._judged: dict[tuple[str | None, str | None], tuple[str | None, str | None]] = {}
        # TTL offsets shared between entries: answers of one shape have the same ones, and
        # an entry holding an already untracked tuple is untracked at its first collection.
        # Only short ones: the table's memory stays small whatever shapes answers take.
        self._offsets: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.hits = 0  # counted here and folded into the metrics on collection
        self.misses = 0
        self.evictions = 0
        self._entries_reported = 0  # len(_entries) as forwarder_cache_entries last saw it
        # client query bytes after the ID -> the reply bytes sent for them
        self.front: dict[bytes, FrontEntry] = {}
        metrics.PENDING.flushers.add(self)

    def flush(self) -> None:
        """Folds the hit, miss and eviction counts and the change in entries into the
        metrics (called on collection)."""
        hits, misses, self.hits, self.misses = self.hits, self.misses, 0, 0
        if hits:
            metrics.cache_hits.inc(hits)
        if misses:
            metrics.cache_misses.inc(misses)
        evictions, self.evictions = self.evictions, 0
        if evictions:
            metrics.cache_evictions.inc(evictions)
        change = len(self._entries) - self._entries_reported
        if change:  # by the change, so that the gauge sums every cache in the process
            metrics.cache_entries.inc(change)
            self._entries_reported += change

    def remember(self, query: bytes, answer: bytes, reply: Reply, rule: str,
                 qtype: int) -> None:
        """Puts a fresh hit (*reply*, sent as *answer*) into the wire front, until its
        entry expires."""
        if len(query) > FRONT_MAX_QUERY or reply.cached is None or answer[2] & (wire.TC >> 8):
            return  # (a truncated answer has no records whose TTLs could be aged)
        entry, second = reply.cached
        front = self.front
        if len(front) >= FRONT_LIMIT:
            front.clear()
        front[query[2:]] = FrontEntry(answer[2:], second, entry[E_STORED] + entry[E_TTL],
                                      entry[E_OFFSETS], (rule, qtype, reply.rcode))

    def __len__(self) -> int:
        return len(self._entries)

    def key(self, q: Query) -> bytes | None:
        """The cache key of *q* (routed: q.rule set), or None for a group the config lacks."""
        rule = q.rule
        assert rule is not None
        group = q.group
        gid = 0 if group is None or group == rule.upstream else self._groups.get(group)
        if gid is None:
            return None
        return q.qname + KEY_EXTRA.pack(q.qtype, q.qclass, q.do << 1 | q.cd, rule.index, gid)

    # --- lookups -----------------------------------------------------------------------

    def get(self, q: Query) -> Reply | None:
        """Answers a fresh cached reply to *q* (TTLs aged), or None. Needs q.rule set."""
        key = self.key(q)
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            q.key = key
            return None
        now = self.clock()
        second = int(now)
        age = second - entry[E_STORED]
        if age < entry[E_TTL]:
            if self._prefetch:
                entry = self._entries[key] = (*entry[:E_HITS], entry[E_HITS] + 1)
                if self._prefetch_due(key, entry, now):
                    return None  # coalesce() answers from the entry and refreshes it
            self._entries.move_to_end(key)
            self.hits += 1
            q.verdict, q.action = entry[E_JUDGED]
            return self._aged(key, entry, age)
        self.misses += 1
        reply = self._expired(key, entry, now)
        if reply is None and key not in self._entries:
            q.key = key
        return reply

    def stale(self, q: Query) -> Reply | None:
        """Answers what may be served when the upstreams failed for *q*: a fresh entry (one
        may have arrived meanwhile), or an expired one within max_stale, or None."""
        key = self.key(q)
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            return None
        now = self.clock()
        age = int(now) - entry[E_STORED]
        if age < entry[E_TTL]:
            return self._aged(key, entry, age)  # type: ignore[arg-type]
        if not self._servable(entry, now):
            return None
        return self._stale_reply(key, entry)  # type: ignore[arg-type]

    def _wire(self, key: bytes, entry: Entry) -> bytes:
        """The entry's wire: the stored body with the question put back."""
        body = entry[E_BODY]
        return body[:12] + key[:-KEY_TAIL] + body[12:]

    def _aged(self, key: bytes, entry: Entry, age: int) -> Reply:
        """The reply for *age*: the body's TTLs lowered by the seconds since it was last
        aged (never below 0; the body keeps them), with the question put back."""
        delta = age - entry[E_AGE]
        if delta > 0 and entry[E_OFFSETS]:
            buf = bytearray(entry[E_BODY])
            shift = len(key) - KEY_TAIL  # offsets count the question, the body lacks it
            unpack, pack = TTL.unpack_from, TTL.pack_into
            for off in entry[E_OFFSETS]:
                ttl = unpack(buf, off - shift)[0] - delta
                pack(buf, off - shift, ttl if ttl > 0 else 0)
            aged = (bytes(buf), *entry[E_OFFSETS:E_AGE], age, entry[E_HITS])
            if self._entries.get(key) is entry:
                self._entries[key] = aged
            entry = aged
        data = self._wire(key, entry)
        return Reply(data, data[3] & 0xF, "cache", entry[E_EDE],
                     cached=(entry, entry[E_STORED] + age))

    def _expired(self, key: bytes, entry: Entry, now: float) -> Reply | None:
        if not self._servable(entry, now):
            self._drop(key)
            return None
        until = self._recheck.get(key) if self._recheck else None
        if until is not None and now < until:
            return self._stale_reply(key, entry)
        return None

    def _servable(self, entry: Entry, now: float) -> bool:
        """Answers whether an expired *entry* may be served stale."""
        s = self.settings
        return (s.serve_stale and now < entry[E_STORED] + entry[E_TTL] + s.max_stale
                and _rcode(entry) != SERVFAIL)

    def _stale_reply(self, key: bytes, entry: Entry) -> Reply:
        buf = bytearray(self._wire(key, entry))
        ttl = self.settings.stale_ttl
        for off in entry[E_OFFSETS]:
            TTL.pack_into(buf, off, ttl)
        metrics.cache_stale.inc()
        return Reply(bytes(buf), buf[3] & 0xF, "stale", (*entry[E_EDE], STALE_EDE))

    def _prefetch_due(self, key: bytes, entry: Entry, now: float) -> bool:
        left = entry[E_STORED] + entry[E_TTL] - now
        return (entry[E_HITS] >= PREFETCH_MIN_HITS and left <= entry[E_TTL] * PREFETCH_WINDOW
                and not self.closed and key not in self._inflight)

    # --- coalescing and serve-stale ------------------------------------------------------

    async def coalesce(self, q: Query, fetch: Fetch) -> Reply:
        """Answers *q* through *fetch* (upstream, policy and `put`), sharing one fetch among
        identical queries in flight. Serves stale when the fetch fails or is slow (see the
        module docstring). Raises what *fetch* raises (UpstreamError) for the caller's
        error boundary, which then asks `stale`."""
        key = self.key(q)
        if key is None:
            return await fetch()
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and int(now) - entry[E_STORED] < entry[E_TTL]:
            # a fresh entry: get() left it for a prefetch, or it arrived since get() missed
            if self._prefetch and self._prefetch_due(key, entry, now):
                self._start(key, fetch, q)
                self.hits += 1
            return self._aged(key, entry, int(now) - entry[E_STORED])
        pending = self._inflight.get(key)
        stale = entry if entry is not None and self._servable(entry, now) else None
        if pending is None and stale is None:
            return await self._fetch_inline(key, fetch, q)
        if pending is None:
            pending = self._start(key, fetch, q)
        else:
            metrics.cache_coalesced.inc()
        task = pending.future()
        pending.waiters += 1
        try:
            if stale is not None:
                await asyncio.wait((task,), timeout=self.settings.stale_client_timeout)
                if not task.done():
                    return self._stale_reply(key, stale)
            reply = await asyncio.shield(task)
        except _OwnerGone:
            return await self.coalesce(q, fetch)  # the query that fetched was cancelled
        finally:
            pending.waiters -= 1
        owner = pending.owner
        if owner is not q:  # the query log shows what the fetch it waited on found
            q.group = owner.group
            q.server = owner.server
            q.upstream_rcode = owner.upstream_rcode
            q.upstream_reply = owner.upstream_reply
            q.verdict = owner.verdict
            q.action = owner.action
        if reply.rcode == SERVFAIL and reply.answered_by != "policy":
            served = self.stale(q)
            if served is not None:
                return served
        return reply

    async def _fetch_inline(self, key: bytes, fetch: Fetch, q: Query) -> Reply:
        """Fetches in the asking query's own task (no task of its own: the common miss),
        publishing the result for identical queries that arrive meanwhile. A background
        task is only needed when a stale answer may have to be served while it runs."""
        pending = self.begin(key, q)
        try:
            reply = await fetch()
        except asyncio.CancelledError:
            self.settle(key, pending, error=_OwnerGone())
            raise
        except BaseException as e:
            self.settle(key, pending, error=e)
            raise
        self.settle(key, pending, reply)
        return reply

    def fetching(self, key: bytes) -> bool:
        """Answers whether a fetch for *key* is in flight (a query would wait on it)."""
        return key in self._inflight

    def abandon(self, key: bytes, pending: _Fetch) -> None:
        """Ends a fetch `begin` marked whose query was cancelled: its waiters fetch again."""
        self.settle(key, pending, error=_OwnerGone())

    def begin(self, key: bytes, q: Query) -> _Fetch:
        """Marks *key* as being fetched by the asking query itself, which calls `settle`
        once it has the reply (or failed); identical queries wait for that meanwhile.
        The caller checks that no fetch for *key* is in flight."""
        pending = self._inflight[key] = _Fetch(None, q)
        return pending

    def settle(self, key: bytes, pending: _Fetch, reply: Reply | None = None,
               error: BaseException | None = None) -> None:
        """Ends a fetch `begin` marked: gives its outcome to the queries waiting on it."""
        future = pending.task
        if future is not None and not future.done():
            if error is None:
                future.set_result(reply)  # type: ignore[arg-type]
            else:
                future.set_exception(error)
                if not pending.waiters:
                    future.exception()  # retrieved: nobody waits any more
        self._ended(key, pending, reply, error)

    def _start(self, key: bytes, fetch: Fetch, q: Query) -> _Fetch:
        task = asyncio.ensure_future(fetch())
        pending = _Fetch(task, q)
        self._inflight[key] = pending
        task.add_done_callback(functools.partial(self._fetched, key, pending))
        return pending

    def _fetched(self, key: bytes, pending: _Fetch, task: asyncio.Future[Reply]) -> None:
        """Done callback of a background fetch (`_start`)."""
        if task.cancelled():
            if self._inflight.get(key) is pending:
                del self._inflight[key]
            return
        exc = task.exception()  # also marks it retrieved when nobody waits any more
        if exc is not None and not isinstance(exc, (UpstreamError, _OwnerGone)) \
                and pending.waiters == 0:
            log.error("background cache refresh failed", exc_info=exc)
        self._ended(key, pending, task.result() if exc is None else None, exc)

    def _ended(self, key: bytes, pending: _Fetch, reply: Reply | None,
               error: BaseException | None) -> None:
        """A fetch is over: no longer in flight, and a failed refresh of an entry that can
        be served stale answers stale for a while (RFC 8767's failure recheck)."""
        if self._inflight.get(key) is pending:
            del self._inflight[key]
        if isinstance(error, _OwnerGone):
            return
        if error is None:
            failed = reply.rcode == SERVFAIL and reply.answered_by != "policy"  # type: ignore[union-attr]
        else:
            failed = True
        if failed and self.settings.serve_stale and not self.closed:
            now = self.clock()
            entry = self._entries.get(key)
            if entry is not None and self._servable(entry, now):  # else nothing to serve
                if len(self._recheck) >= RECHECK_LIMIT:
                    self._prune_recheck(now)
                self._recheck[key] = now + self.settings.stale_ttl
        elif self._recheck:
            self._recheck.pop(key, None)

    def _prune_recheck(self, now: float) -> None:
        self._recheck = {k: t for k, t in self._recheck.items() if t > now}
        if len(self._recheck) >= RECHECK_LIMIT // 2:  # a wide outage: keep the sweep rare
            self._recheck.clear()

    async def wait_idle(self) -> None:
        """Waits until no fetch (for queries or a background refresh) is in flight."""
        while self._inflight:
            tasks = [p.future() for p in self._inflight.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- storing -------------------------------------------------------------------------

    def put(self, q: Query, reply: Reply) -> None:
        """Stores *reply* to *q* if it is cacheable (see the module docstring)."""
        if self.closed:
            return
        key = q.key or self.key(q)  # (get() left the key when it found no entry)
        if key is None:
            return
        now = self.clock()
        entry = self._entry(q, key, reply, now)
        if entry is None:
            return
        entries = self._entries
        old = entries.get(key)
        if old is not None:
            if (reply.rcode == SERVFAIL and _rcode(old) != SERVFAIL
                    and (int(now) - old[E_STORED] < old[E_TTL] or self._servable(old, now))):
                return  # keep the answer that can still be served (stale)
            entries[key] = entry
            entries.move_to_end(key)
        else:
            if len(entries) >= self.settings.max_entries:
                entries.popitem(last=False)
                self.evictions += 1
            entries[key] = entry
        if self._recheck:
            self._recheck.pop(key, None)

    def _entry(self, q: Query, key: bytes, reply: Reply, now: float) -> Entry | None:
        data = reply.wire
        rcode = reply.rcode
        if rcode > 0xF or len(data) > MAX_ENTRY_BYTES:
            return None
        qend = 12 + len(key) - KEY_TAIL
        policy_ttl: int | None = None
        if reply.answered_by == "policy":
            name = q.rule.policy if q.rule is not None else None
            policy_ttl = self._policy_ttl.get(name or "", DEFAULT_POLICY_TTL)
        try:
            if len(data) < qend or data[4:6] != b"\x00\x01" or data[3] & 0xF != rcode \
                    or data[2] & (wire.TC >> 8):
                return None
            records = reply.records  # an upstream reply: its question was checked then
            if records is None:
                nend = 12 + len(q.qname)
                if data[12:nend].lower() != q.qname or data[nend:qend] != key[nend - 12:qend - 12]:
                    return None
                records = _walk(data)
            records, ancount, negative = records
        except (FormError, struct.error, IndexError):
            return None
        s = self.settings
        buf: bytearray | None = None  # a copy, once a TTL must change
        ttl: int | None = None
        if rcode == NOERROR and ancount:
            low, high = s.min_ttl, s.max_ttl
            for off, rttl, counts in records:
                t = low if rttl < low else high if rttl > high else rttl
                if t != rttl:
                    if buf is None:
                        buf = bytearray(data)
                    TTL.pack_into(buf, off, t)
                if counts and (ttl is None or t < ttl):
                    ttl = t
        elif rcode in (NOERROR, NXDOMAIN) and negative is not None:
            ttl = min(negative, s.max_negative_ttl)
            for off, rttl, _counts in records:
                if rttl > ttl:
                    if buf is None:
                        buf = bytearray(data)
                    TTL.pack_into(buf, off, ttl)
        elif rcode == SERVFAIL and policy_ttl is None:
            ttl = s.servfail_ttl
        elif policy_ttl is not None:  # blocked: no TTL of its own
            ttl = policy_ttl
        if not ttl or ttl <= 0:
            return None
        second = int(now)
        if second != self._second:
            self._second = second
        if ttl > 256:  # small ints are shared by Python already
            ttl = _shared(self._ints, ttl, SHARED_LIMIT)
        body = data[:12] + data[qend:] if buf is None else bytes(buf[:12] + buf[qend:])
        offsets = tuple([r[0] for r in records])
        if len(offsets) <= SHARED_OFFSETS_MAX_LEN:
            offsets = _shared(self._offsets, offsets, SHARED_OFFSETS_LIMIT)
        judged = _shared(self._judged, (q.verdict, q.action), SHARED_LIMIT)
        return (body, offsets, reply.ede, self._second, ttl, judged, 0, 0)

    def _drop(self, key: bytes) -> None:
        self._entries.pop(key, None)

    # --- lifetime ------------------------------------------------------------------------

    def adopt(self, owner: Runtime) -> None:
        """Records that *owner* uses this cache (a reload may share it with the next one)."""
        self._owners.add(owner)

    def release(self, owner: Runtime) -> None:
        """*owner* is done with the cache; the last owner closes it."""
        self._owners.discard(owner)
        if not self._owners:
            self.close()

    def close(self) -> None:
        """Drops the entries and cancels background refreshes nobody waits for; fetches
        that queries still wait on finish by themselves (bounded by the group budget)."""
        if self.closed:
            return
        self.closed = True
        for pending in list(self._inflight.values()):
            if pending.waiters == 0 and isinstance(pending.task, asyncio.Task):
                pending.task.cancel()  # a background refresh (a query's own fetch goes on)
        self._entries.clear()
        self.flush()
        self._recheck.clear()
        self.front.clear()


def _walk(data: bytes) -> wire.Records:
    """Walks a reply: answers ([(ttl offset, ttl, counts for the entry's TTL)], answer count,
    negative TTL from the first SOA in the authority section or None). OPT is skipped.
    Raises FormError (or struct.error) if the message is malformed."""
    records, _opt, stop = wire.walk_records(data)
    if stop != len(data):
        raise FormError("trailing bytes after the last record")
    return records


def build(cfg: model.Config, previous: Cache | None,
          previous_cfg: model.Config | None) -> Cache | None:
    """The cache for *cfg* (None when `cache.enabled` is false). The *previous* cache (made
    for *previous_cfg*), entries and all, carries over when the cache settings, zone rules,
    policies and upstream groups are unchanged; any change there starts an empty cache."""
    if not cfg.cache.enabled:
        return None
    if (previous is not None and previous_cfg is not None and not previous.closed
            and _same_answers(previous_cfg, cfg)):
        return previous
    return Cache(cfg)


def _same_answers(old: model.Config, new: model.Config) -> bool:
    """Answers whether cached answers made under *old* are still right under *new*."""
    return (old.cache == new.cache and old.rules == new.rules
            and old.policies == new.policies and old.upstreams == new.upstreams)
