"""The cache's wire front (UDP only): repeats of a query the cache answered, answered from
the bytes sent the first time.

Once a fresh cache hit has been answered, the exact bytes the client sent (minus the ID)
map to the exact bytes it got (minus the ID) until the entry expires. A repeat of the same
query is answered by one dict lookup, the ACL check and an ID patch, without reading the
question; in a later second the front lowers the TTLs itself first (FrontEntry). Once the
entry expires the query takes the pipeline again (serve-stale, refresh). Front hits do not
move an entry up the LRU order; an entry evicted meanwhile is still served from the front
until it expires, which is still a correct answer.

The runtime uses the front only when no stage must see each query (each stage says so:
`sees_every_query`): hooks, the rate limit, the query log, prefetch, or rules that match
client networks (the same bytes could then route differently for different clients).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from forwarder.dns import wire

if TYPE_CHECKING:
    from forwarder.pipeline.accounting import Accounting
    from forwarder.query import Reply
    from forwarder.stages.acl import Acl

log = logging.getLogger("forwarder")

TTL = struct.Struct("!I")
BATCH = 64  # datagrams read per wakeup
FRONT_LIMIT = 10_000  # distinct query byte strings remembered per second at most
FRONT_MAX_QUERY = 512  # longer queries (padding, many options) are not remembered

Address = tuple[str, int]


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


class WireFront:
    """Query bytes -> the reply bytes sent for them, for one cache."""

    __slots__ = ("clock", "entries", "hits")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock  # the cache's: entries age by it
        self.entries: dict[bytes, FrontEntry] = {}
        self.hits = 0  # answered here: the cache adds them to its hit count

    def __len__(self) -> int:
        return len(self.entries)

    def remember(self, query: bytes, answer: bytes, reply: Reply, rule: str,
                 qtype: int) -> None:
        """Puts a fresh hit (*reply*, sent as *answer*) into the front, until its entry
        expires."""
        if len(query) > FRONT_MAX_QUERY or reply.cached is None or answer[2] & (wire.TC >> 8):
            return  # (a truncated answer has no records whose TTLs could be aged)
        until, offsets, second = reply.cached
        entries = self.entries
        if len(entries) >= FRONT_LIMIT:
            entries.clear()
        entries[query[2:]] = FrontEntry(answer[2:], second, until, offsets,
                                        (rule, qtype, reply.rcode))

    def clear(self) -> None:
        self.entries.clear()

    def serve(self, sock: socket.socket, acl: Acl, other: Callable[[bytes, Address], None],
              send_failed: Callable[[OSError, Address], None],
              accounting: Accounting) -> None:
        """Reads a batch of datagrams from *sock*: a repeat from an allowed client is
        answered here (its ID patched in), anything else goes to *other*."""
        started = time.monotonic()
        second = int(self.clock())
        get = self.entries.get
        allows = acl.allows
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        hits: dict[tuple[str, int, int], int] = {}
        tail: bytes | None
        try:
            for _ in range(BATCH):
                try:
                    data, addr = recvfrom(65_535)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    log.debug("udp receive error: %s", e)
                    return
                hit = get(data[2:])
                if hit is None or not allows(addr[0]):
                    other(data, addr)
                    continue
                tail = hit.tail if hit.second == second else hit.age_to(second)
                if tail is None:  # expired: the cache decides (stale, refresh)
                    other(data, addr)
                    continue
                try:
                    sendto(data[:2] + tail, addr)
                except OSError as e:
                    send_failed(e, addr)
                key = hit.accounting
                hits[key] = hits.get(key, 0) + 1
        finally:
            if hits:
                elapsed = time.monotonic() - started  # each waited at most the whole batch
                self.hits += sum(hits.values())
                for (rule, qtype, rcode), n in hits.items():
                    accounting.count("udp", rule, qtype, rcode, elapsed, n)
