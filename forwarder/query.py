"""Query, the per-request view the pipeline works on, and Reply, what a stage answers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forwarder import metrics
from forwarder.dns import names, wire
from forwarder.errors import DropPacket, FormError

if TYPE_CHECKING:
    from forwarder.config.model import Rule
    from forwarder.dns.index import Index


@dataclass(slots=True)
class Query:
    """One client query, read from the wire without a general parser."""

    wire: bytes  # as received
    id: int
    flags: int
    qname: bytes  # lower-case wire name: the key for router and cache
    qtype: int
    qclass: int
    question: bytes  # the question section as received (the client's letter case)
    client: tuple[str, int]
    transport: str  # "udp" | "tcp"
    edns: bool
    udp_size: int  # what the client accepts over UDP (512 without EDNS)
    do: bool
    cd: bool
    received: float  # loop time when it arrived
    rule: Rule | None = None  # set by the router
    group: str | None = None  # the upstream group asked (a hook may reroute)
    trace: list[str] | None = None  # `forwarder explain` collects steps here
    edns_version: int = 0
    runtime: Any = None  # the Runtime this query started under (kept across a reload)
    tags: dict[str, str] | None = None  # set by hooks (ctx.tag) for the query log
    key: bytes | None = None  # the cache key, when a lookup found no entry for it

    @classmethod
    def from_wire(
        cls, data: bytes, client: tuple[str, int], transport: str, now: float
    ) -> Query:
        """Reads a client message. Raises DropPacket or FormError (see wire.parse_query)."""
        (ident, flags, qname, qtype, qclass, question, edns, udp_size, do, cd,
         version) = wire.parse_query(data)
        return cls(data, ident, flags, qname, qtype, qclass, question, client, transport,
                   edns, udp_size if transport == "udp" else 0, do, cd, now, None, None, None,
                   version)

    @property
    def name(self) -> str:
        """The query name in presentation form, lower-case, no trailing dot."""
        return names.to_text(self.qname)

    @property
    def type_name(self) -> str:
        return wire.qtype_to_text(self.qtype)

    def note(self, step: str) -> None:
        if self.trace is not None:
            self.trace.append(step)


class Reply:
    """A stage's answer: internal wire form (no OPT record), rcode, who answered, and EDEs.
    Not changed once made (a plain class: one is made per forwarded query, and a frozen
    dataclass costs several times more to build)."""

    __slots__ = ("action", "answered_by", "cached", "ede", "index", "protection", "rcode",
                 "server", "upstream", "verdict", "violations", "wire")

    def __init__(self, wire: bytes, rcode: int, answered_by: str,
                 ede: tuple[tuple[int, str], ...] = (), server: str | None = None,
                 index: Index | None = None, cached: Any = None) -> None:
        self.wire = wire
        self.rcode = rcode
        self.answered_by = answered_by  # "acl", "local", "cache", "upstream", "policy", ...
        self.ede = ede
        self.server = server  # the upstream server that answered, if any
        self.index = index  # `wire` read by forwarder.dns.reply (upstream replies)
        self.cached = cached  # a fresh cache hit: (until, TTL offsets, second aged to)
        # the outcome, set once by the step that concludes the query, before anyone else
        # sees the reply: the answer policy's verdict ("pass", "violation",
        # "not_protected") and action ("pass", "rewrite", "servfail", ...) with the
        # addresses that violated it, and the upstream's own reply when the policy
        # answered with another one
        self.verdict: str | None = None
        self.action: str | None = None
        self.violations: tuple[str, ...] = ()
        self.upstream: Reply | None = None
        # (policy, protected wire name, "qname" | "chain") when a policy judged the answer
        self.protection: tuple[str, bytes | None, str] | None = None

    def __repr__(self) -> str:
        return (f"Reply(rcode={self.rcode}, answered_by={self.answered_by!r}, "
                f"ede={self.ede!r}, server={self.server!r}, {len(self.wire)} bytes)")

    @property
    def upstream_reply(self) -> Reply | None:
        """The upstream's own reply behind this one: itself when an upstream answered, the
        one the policy replaced, or None (local records, the cache, the forwarder's own)."""
        if self.upstream is not None:
            return self.upstream
        return self if self.answered_by == "upstream" else None

    def to_client(self, q: Query) -> bytes:
        """The bytes sent to the client of *q* (its ID, case, OPT; truncated for UDP)."""
        return wire.finish(
            q.id, q.flags, q.question, q.edns, q.do, q.udp_size, self.wire, self.rcode, self.ede
        )


DROP = Reply(b"", -1, "drop")  # a verdict: send nothing


def receive(data: bytes, client: tuple[str, int], transport: str) -> Query | bytes | None:
    """Reads a client message for a listener: the Query, or the bytes to send back
    (FORMERR, or NOTIMP for another opcode), or None to drop it; counts what is malformed."""
    try:
        return Query.from_wire(data, client, transport, time.monotonic())
    except DropPacket as e:
        metrics.malformed.labels(e.kind).inc()
        return None
    except FormError as e:
        metrics.malformed.labels(e.kind).inc()
        rcode = wire.Rcode.NOTIMP if e.kind == "notimp" else wire.Rcode.FORMERR
        return wire.header_only_reply(data, rcode)


def error_reply(
    q: Query, rcode: int, ede_code: int | None = None, text: str = "", by: str = "error"
) -> Reply:
    """A reply with no records: REFUSED, SERVFAIL, FORMERR..., optionally with one EDE."""
    ede = ((ede_code, text),) if ede_code is not None else ()
    return Reply(wire.synth_reply(q.flags, q.question, rcode), rcode, by, ede)
