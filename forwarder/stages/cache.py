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
refreshes the entry (stages/flights.py). After a failed refresh, the name is answered stale
at once for stale_ttl seconds (the RFC's failure recheck timer) instead of waiting on
upstreams again.

Prefetch (off by default): an entry hit at least twice and asked again when less than 10% of
its TTL is left is answered from the cache while a background fetch refreshes it.

Eviction is LRU within max_entries; expired entries past their stale window are dropped
when looked up. Repeats of UDP queries the cache answered are answered by its wire front
(stages/front.py).
"""

from __future__ import annotations

import logging
import struct
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import wire
from forwarder.dns.index import R_SECTION, R_TTL, R_TTL_OFF, SECTION_ADDITIONAL
from forwarder.dns.reply import read as read_reply
from forwarder.errors import FormError
from forwarder.query import Query, Reply
from forwarder.stages.flights import Flights
from forwarder.stages.front import WireFront

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
DEFAULT_POLICY_TTL = 30
MAX_ENTRY_BYTES = 4096  # bigger answers (TCP only) are not cached: memory stays bounded
SHARED_LIMIT = 65_536  # TTL values and policy verdicts entries share
SHARED_OFFSETS_LIMIT = 4096  # answer shapes whose TTL offsets entries share ...
SHARED_OFFSETS_MAX_LEN = 8  # ... for answers of at most this many records
NOERROR = int(wire.Rcode.NOERROR)
NXDOMAIN = int(wire.Rcode.NXDOMAIN)
SERVFAIL = int(wire.Rcode.SERVFAIL)


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
#   judged   the policy's (verdict, action, violating addresses, protection) on the
#            answer, for the query log
#   hits     hits while fresh, for prefetch
Judged = tuple[str | None, str | None, tuple[str, ...]]
Entry = tuple[bytes, tuple[int, ...], tuple[tuple[int, str], ...], int, int, Judged, int, int]
E_BODY, E_OFFSETS, E_EDE, E_STORED, E_TTL, E_JUDGED, E_AGE, E_HITS = range(8)


def _rcode(entry: Entry) -> int:
    return entry[E_BODY][3] & 0xF


def _shared(table: dict[T, T], value: T, limit: int) -> T:
    """*value*, or the equal one *table* gave out before, so that entries share one object
    (less memory); the table starts over once it holds *limit* values."""
    if len(table) >= limit:
        table.clear()
    return table.setdefault(value, value)


class Cache:
    """The answer cache of one runtime (shared with the next one when a reload keeps the
    cache settings, rules, policies and upstream groups)."""

    def __init__(self, cfg: model.Config,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = cfg.cache
        self.clock = clock
        self.closed = False
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._groups = {g.name: i + 1 for i, g in enumerate(cfg.upstreams)}
        self._policy_ttl = {p.name: p.ttl for p in cfg.policies}
        self._owners: weakref.WeakSet[Runtime] = weakref.WeakSet()
        self._prefetch = cfg.cache.prefetch
        self._second = 0  # one int object per second: entries stored in it share it
        self._ints: dict[int, int] = {}  # TTL values shared between entries
        self._judged: dict[Judged, Judged] = {}
        # TTL offsets shared between entries: answers of one shape have the same ones, and
        # an entry holding an already untracked tuple is untracked at its first collection.
        # Only short ones: the table's memory stays small whatever shapes answers take.
        self._offsets: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.hits = 0  # counted here and folded into the metrics on collection
        self.misses = 0
        self.evictions = 0
        self._entries_reported = 0  # len(_entries) as forwarder_cache_entries last saw it
        self.flights = Flights(self)  # fetches in flight, by key
        self.front = WireFront(clock)  # repeats of UDP queries answered from the cache
        # the stages that must see each query say so: the wire front answers without them
        self.sees_every_query = cfg.cache.prefetch  # (prefetch counts hits)
        metrics.PENDING.flushers.add(self)

    def flush(self) -> None:
        """Folds the hit, miss and eviction counts and the change in entries into the
        metrics (called on collection)."""
        hits, misses, self.hits, self.misses = self.hits, self.misses, 0, 0
        hits, self.front.hits = hits + self.front.hits, 0
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
        return self.stale_reply(key, entry)  # type: ignore[arg-type]

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
        reply = Reply(data, data[3] & 0xF, "cache", entry[E_EDE],
                      cached=(entry[E_STORED] + entry[E_TTL], entry[E_OFFSETS],
                              entry[E_STORED] + age))
        reply.verdict, reply.action, reply.violations, reply.protection = entry[E_JUDGED]
        return reply

    def _expired(self, key: bytes, entry: Entry, now: float) -> Reply | None:
        if not self._servable(entry, now):
            self._drop(key)
            return None
        until = self.flights.recheck.get(key) if self.flights.recheck else None
        if until is not None and now < until:
            return self.stale_reply(key, entry)
        return None

    def _servable(self, entry: Entry, now: float) -> bool:
        """Answers whether an expired *entry* may be served stale."""
        s = self.settings
        return (s.serve_stale and now < entry[E_STORED] + entry[E_TTL] + s.max_stale
                and _rcode(entry) != SERVFAIL)

    def fresh(self, key: bytes, now: float) -> tuple[Reply | None, bool]:
        """The fresh answer for *key* (one may have arrived since `get` missed, or `get`
        left it for a prefetch), and whether a prefetch is due."""
        entry = self._entries.get(key)
        if entry is None or int(now) - entry[E_STORED] >= entry[E_TTL]:
            return None, False
        due = self._prefetch and self._prefetch_due(key, entry, now)
        if due:
            self.hits += 1
        return self._aged(key, entry, int(now) - entry[E_STORED]), due

    def servable(self, key: bytes, now: float) -> Entry | None:
        """The expired entry for *key* if it may be served stale, else None."""
        entry = self._entries.get(key)
        return entry if entry is not None and self._servable(entry, now) else None

    def stale_reply(self, key: bytes, entry: Entry) -> Reply:
        """The expired *entry* as a stale answer: every TTL stale_ttl, EDE 3."""
        buf = bytearray(self._wire(key, entry))
        ttl = self.settings.stale_ttl
        for off in entry[E_OFFSETS]:
            TTL.pack_into(buf, off, ttl)
        metrics.cache_stale.inc()
        return Reply(bytes(buf), buf[3] & 0xF, "stale", (*entry[E_EDE], STALE_EDE))


    def _prefetch_due(self, key: bytes, entry: Entry, now: float) -> bool:
        left = entry[E_STORED] + entry[E_TTL] - now
        return (entry[E_HITS] >= PREFETCH_MIN_HITS and left <= entry[E_TTL] * PREFETCH_WINDOW
                and not self.closed and not self.flights.fetching(key))

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
        if self.flights.recheck:
            self.flights.recheck.pop(key, None)

    def _entry(self, q: Query, key: bytes, reply: Reply, now: float) -> Entry | None:
        data = reply.wire
        rcode = reply.rcode
        if rcode > 0xF or len(data) > MAX_ENTRY_BYTES:
            return None
        qend = 12 + len(key) - KEY_TAIL
        policy_ttl: int | None = None
        if reply.answered_by == "policy":  # made by the policy that judged it
            name = reply.protection[0] if reply.protection is not None else None
            policy_ttl = self._policy_ttl.get(name or "", DEFAULT_POLICY_TTL)
        if len(data) < qend or data[4:6] != b"\x00\x01" or data[3] & 0xF != rcode \
                or data[2] & (wire.TC >> 8):
            return None
        index = reply.index  # an upstream reply: its question was checked then
        if index is None:
            nend = 12 + len(q.qname)
            if data[12:nend].lower() != q.qname or data[nend:qend] != key[nend - 12:qend - 12]:
                return None
            try:
                index = read_reply(data, qend)
            except FormError:
                return None
        records = index.records
        ancount = index.ancount
        negative = index.negative
        s = self.settings
        buf: bytearray | None = None  # a copy, once a TTL must change
        ttl: int | None = None
        if rcode == NOERROR and ancount:
            low, high = s.min_ttl, s.max_ttl
            for rec in records:
                rttl = rec[R_TTL]
                t = low if rttl < low else high if rttl > high else rttl
                if t != rttl:
                    if buf is None:
                        buf = bytearray(data)
                    TTL.pack_into(buf, rec[R_TTL_OFF], t)
                if rec[R_SECTION] != SECTION_ADDITIONAL and (ttl is None or t < ttl):
                    ttl = t
        elif rcode in (NOERROR, NXDOMAIN) and negative is not None:
            ttl = min(negative, s.max_negative_ttl)
            for rec in records:
                rttl, off = rec[R_TTL], rec[R_TTL_OFF]
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
        offsets = tuple([r[R_TTL_OFF] for r in records])
        if len(offsets) <= SHARED_OFFSETS_MAX_LEN:
            offsets = _shared(self._offsets, offsets, SHARED_OFFSETS_LIMIT)
        judged = _shared(self._judged, (reply.verdict, reply.action, reply.violations,
                                        reply.protection),
                         SHARED_LIMIT)
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
        self.flights.close()
        self._entries.clear()
        self.flush()
        self.front.clear()


def build(cfg: model.Config, previous: Cache | None,
          previous_cfg: model.Config | None) -> Cache | None:
    """The cache for *cfg* (None when `cache.enabled` is false). The *previous* cache (made
    for *previous_cfg*), entries and all, carries over when the cache settings, zone rules,
    policies, protection and upstream groups are unchanged; any change there starts an
    empty cache."""
    if not cfg.cache.enabled:
        return None
    if (previous is not None and previous_cfg is not None and not previous.closed
            and _same_answers(previous_cfg, cfg)):
        return previous
    return Cache(cfg)


def _same_answers(old: model.Config, new: model.Config) -> bool:
    """Answers whether cached answers made under *old* are still right under *new* (the
    cache holds judged answers: what judges them must not change either)."""
    return (old.cache == new.cache and old.rules == new.rules
            and old.policies == new.policies and old.protection == new.protection
            and old.upstreams == new.upstreams)
