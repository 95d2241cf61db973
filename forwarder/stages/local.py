"""Local records: authoritative answers from a rule's `records:` and `hosts_file:`.

A rule with records is a small authoritative zone whose apex is the rule's `match`:

- a name with records of the asked type gets them (AA set, each record's own TTL);
- a name with a CNAME gets the CNAME, and when the target is served by the same zone the
  chain is followed (at most `MAX_CHAIN` hops) and the target's records are added; when
  the chain leaves the zone, the answer is a `Leaving` reply naming the target, which the
  pipeline follows through the rule that routes it (pipeline/chase.py);
- a name under the zone with no records gets NXDOMAIN, a name that exists (it has other
  records, it is the apex, or it has names below it) gets NODATA; both carry the zone's
  SOA in the authority section (owner = `match`, TTL and MINIMUM = the rule's `ttl`);
- `*.x` matches every name under `x` that has no records of its own, at any depth; the
  most specific wildcard wins. This is simpler than RFC 4592: a name that exists only
  because names below it have records does not block a wildcard above it.

Hosts files (`IP name [aliases...]`, `#` comments) give A records for IPv4 and AAAA for
IPv6 addresses with the rule's `ttl`; names outside the rule's `match` are skipped, so a
system hosts file can be used as it is. The file is read when the configuration is built,
i.e. again on every reload; any problem (unreadable, a bad line) is a ConfigError naming the
line, so a reload keeps the previous configuration.

Every answer is packed when the zone is built: a hit costs a dict lookup, plus one bytes
join when the reply must carry the client's question.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from forwarder.config import model
from forwarder.dns import names, wire
from forwarder.dns.wire import (
    CLASS_IN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    TYPE_CNAME,
    TYPE_SOA,
    TYPE_TXT,
)
from forwarder.errors import ConfigError, ConfigProblem
from forwarder.query import Query, Reply

MAX_CHAIN = 8  # CNAME hops followed inside one zone
_OTHER = 0  # key of the answer for a type no name in the zone has
_CHASED = (TYPE_A, TYPE_AAAA, TYPE_TXT, _OTHER)
_SELF = b"\xc0\x0c"  # compression pointer to the question name
_WILD = b"\x01*"
_SOA_TIMERS = struct.Struct("!IIIII")
SOA_SERIAL, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 1, 3600, 600, 86_400


class Leaving(Reply):
    """A local answer whose CNAME chain leaves the zone: the CNAMEs so far, and the name
    the chain goes on with, which another rule routes (pipeline/chase.py follows it)."""

    __slots__ = ("target",)

    def __init__(self, wire: bytes, rcode: int, target: bytes) -> None:
        super().__init__(wire, rcode, "local")
        self.target = target  # wire name, lower case


@dataclass(frozen=True, slots=True)
class _Packed:
    """One answer for any query name: header without question, and the sections after it."""

    head: bytes  # ID 0, no RD (finish() copies the client's), CD clear
    head_cd: bytes  # the same with CD set (RFC 4035 3.2.2: copied from the query)
    tail: bytes
    rcode: int
    leaves: bytes | None = None  # where the CNAME chain leaves the zone

    def reply(self, q: Query) -> Reply:
        head = self.head_cd if q.cd else self.head
        if self.leaves is not None:
            return Leaving(head + q.question + self.tail, self.rcode, self.leaves)
        return Reply(head + q.question + self.tail, self.rcode, "local")


def _packed(rcode: int, answer: list[bytes], authority: list[bytes],
            leaves: bytes | None = None) -> _Packed:
    flags = wire.QR | wire.AA | wire.RA | rcode
    counts = (1, len(answer), len(authority), 0)
    return _Packed(wire.HEADER.pack(0, flags, *counts), wire.HEADER.pack(0, flags | wire.CD,
                   *counts), b"".join(answer) + b"".join(authority), rcode, leaves)


class _Node:
    """The records one owner name (or one `*.x` wildcard) has, by type."""

    __slots__ = ("answers", "name", "rdata", "replies", "ttl")

    def __init__(self, name: str) -> None:
        self.name = name
        self.rdata: dict[int, list[bytes]] = {}  # type -> distinct rdata, in config order
        self.ttl: dict[int, int] = {}  # type -> TTL of the RRset (the lowest given)
        self.answers: dict[int, _Packed] = {}  # qtype (or _OTHER) -> packed answer
        self.replies: dict[int, Reply] = {}  # qtype -> whole reply, exact names only

    def add(self, rtype: int, rdata: bytes, ttl: int) -> None:
        found = self.rdata.setdefault(rtype, [])
        if rdata not in found:
            found.append(rdata)
        self.ttl[rtype] = min(ttl, self.ttl.get(rtype, ttl))

    def rrset(self, owner: bytes, rtype: int) -> list[bytes]:
        ttl = self.ttl[rtype]
        pack = wire.RR_FIXED.pack
        return [owner + pack(rtype, CLASS_IN, ttl, len(rd)) + rd for rd in self.rdata[rtype]]

    @property
    def cname(self) -> bytes | None:
        found = self.rdata.get(TYPE_CNAME)
        return found[0] if found else None


class LocalZone:
    """Answers queries for one local rule from records packed at build time."""

    __slots__ = ("_apex", "_apex_len", "_exact", "_existing", "_nodata", "_nxdomain", "_refused",
                 "_wild", "rule")

    def __init__(self, rule: model.Rule, records: Iterable[model.LocalRecord],
                 carved_out: Iterable[str] = ()) -> None:
        """Packs every answer of the zone. Raises ValueError for a CNAME that shares its name
        with other records or chains into a loop."""
        self.rule = rule
        apex = names.from_text(rule.match)
        self._apex = apex
        self._apex_len = len(apex)
        self._exact: dict[bytes, _Node] = {}
        self._wild: dict[bytes, _Node] = {}
        for rec in records:
            owner = names.from_text(rec.name[2:] if rec.name.startswith("*.") else rec.name)
            table = self._wild if rec.name.startswith("*.") else self._exact
            key = _WILD + owner if table is self._wild else owner
            node = table.get(key)
            if node is None:
                node = table[key] = _Node(rec.name)
            node.add(rec.rtype, _rdata(rec), rec.ttl)
        # names that exist without records of their own: the apex and every ancestor
        self._existing: set[bytes] = {apex}
        for key in (*self._exact, *self._wild):
            off = 0
            while len(key) - off > len(apex):
                off += key[off] + 1
                self._existing.add(key[off:])
        soa = [_soa(apex, rule)]
        self._nxdomain = _packed(wire.Rcode.NXDOMAIN, [], soa)
        self._nodata = _packed(wire.Rcode.NOERROR, [], soa)
        self._refused = _packed(wire.Rcode.REFUSED, [], [])
        carved = tuple(names.from_text(s) for s in carved_out)
        for node in (*self._exact.values(), *self._wild.values()):
            self._pack_node(node, carved, soa)
        apex_node = self._exact.get(apex)
        apex_soa = _packed(wire.Rcode.NOERROR, [_SELF + soa[0][len(apex):]], [])
        if apex_node is None or TYPE_CNAME not in apex_node.rdata:
            if apex_node is None:
                apex_node = self._exact[apex] = _Node(rule.match)
                apex_node.answers[_OTHER] = self._nodata
            apex_node.answers[TYPE_SOA] = apex_soa
        for key, node in self._exact.items():
            for qtype, packed in node.answers.items():
                if qtype != _OTHER and packed.leaves is None:
                    # the question is patched to the client's by finish()
                    question = wire.question_of(key, qtype, CLASS_IN)
                    node.replies[qtype] = Reply(packed.head + question + packed.tail,
                                                packed.rcode, "local")

    def answer(self, q: Query) -> Reply:
        """Answers *q* from the zone: records, a CNAME chain, NODATA or NXDOMAIN."""
        node = self._exact.get(q.qname)
        if node is not None:
            reply = node.replies.get(q.qtype)
            if reply is not None and not q.cd and q.qclass == CLASS_IN:
                return reply
        else:
            node = self._wildcard(q.qname)
        if q.qclass != CLASS_IN:
            if q.trace is not None:
                q.note(f"local zone {self.rule.match!r} serves class IN only: REFUSED")
            return self._refused.reply(q)
        if node is None:
            if q.qname in self._existing:
                if q.trace is not None:
                    q.note(f"local zone {self.rule.match!r}: the name has no records: NODATA")
                return self._nodata.reply(q)
            if q.trace is not None:
                q.note(f"local zone {self.rule.match!r}: no such name: NXDOMAIN")
            return self._nxdomain.reply(q)
        if q.trace is not None:
            q.note(f"local zone {self.rule.match!r}: answered from {node.name}")
        return (node.answers.get(q.qtype) or node.answers[_OTHER]).reply(q)

    def packed(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every answer the zone can give, as (owner, query type, whole reply): for a
        `*.x` node the owner is the wildcard name itself (0 for "any other type"). The
        answer policy judges them once, here (policy/zones.py)."""
        for key, node in (*self._exact.items(), *self._wild.items()):
            for qtype, packed in node.answers.items():
                question = wire.question_of(key, qtype or TYPE_A, CLASS_IN)
                yield key, qtype, packed.head + question + packed.tail

    def _wildcard(self, qname: bytes) -> _Node | None:
        """The most specific `*.x` node whose `x` is a proper suffix of *qname*."""
        wild = self._wild
        if not wild:
            return None
        off = qname[0] + 1
        stop = len(qname) - self._apex_len
        while off <= stop:
            node = wild.get(_WILD + qname[off:])
            if node is not None:
                return node
            if qname[off] == 0:
                return None
            off += qname[off] + 1
        return None

    def _find(self, name: bytes) -> _Node | None:
        return self._exact.get(name) or self._wildcard(name)

    def _pack_node(self, node: _Node, carved: tuple[bytes, ...], soa: list[bytes]) -> None:
        """Packs *node*'s answers for every query type: its own RRsets, or the CNAME chain
        followed inside the zone, or NODATA."""
        types = set(node.rdata)
        if TYPE_CNAME in types and len(types) > 1:
            others = ", ".join(wire.qtype_to_text(t) for t in sorted(types - {TYPE_CNAME}))
            raise ValueError(f"{node.name} has a CNAME and other records ({others}); "
                             "a CNAME must be the only record of its name")
        if TYPE_CNAME in types and len(node.rdata[TYPE_CNAME]) > 1:
            raise ValueError(f"{node.name} has more than one CNAME")
        every = []
        for rtype in sorted(types):
            rrset = node.rrset(_SELF, rtype)
            node.answers[rtype] = _packed(wire.Rcode.NOERROR, rrset, [])
            every.extend(rrset)
        node.answers[TYPE_ANY] = _packed(wire.Rcode.NOERROR, every, [])
        if node.cname is None:
            node.answers[_OTHER] = self._nodata
            return
        for qtype in _CHASED:
            node.answers[qtype] = self._chase(node, qtype, carved, soa)

    def _chase(self, start: _Node, qtype: int, carved: tuple[bytes, ...],
               soa: list[bytes]) -> _Packed:
        answer = start.rrset(_SELF, TYPE_CNAME)
        seen = {id(start)}
        chain = [start.name]
        target = start.cname
        assert target is not None
        for _ in range(MAX_CHAIN):
            if not self._serves(target, carved):  # the rule that routes it goes on
                return _packed(wire.Rcode.NOERROR, answer, [], leaves=target)
            node = self._find(target)
            if node is None:
                rcode = wire.Rcode.NOERROR if target in self._existing else wire.Rcode.NXDOMAIN
                return _packed(rcode, answer, soa)
            if id(node) in seen:
                chain.append(names.to_text(target))
                raise ValueError(f"CNAME loop: {' -> '.join(chain)}")
            seen.add(id(node))
            chain.append(names.to_text(target))
            if qtype in node.rdata:
                return _packed(wire.Rcode.NOERROR, answer + node.rrset(target, qtype), [])
            if node.cname is None:
                return _packed(wire.Rcode.NOERROR, answer, soa)
            answer += node.rrset(target, TYPE_CNAME)
            target = node.cname
        return _packed(wire.Rcode.NOERROR, answer, [])

    def _serves(self, name: bytes, carved: tuple[bytes, ...]) -> bool:
        """Answers whether *name* is in this zone: under the apex, and not under the match
        of a more specific rule."""
        under = names.is_under
        return under(name, self._apex) and not any(under(name, c) for c in carved)


def _rdata(rec: model.LocalRecord) -> bytes:
    if rec.rtype == TYPE_A:
        return ipaddress.IPv4Address(rec.value).packed
    if rec.rtype == TYPE_AAAA:
        return ipaddress.IPv6Address(rec.value).packed
    if rec.rtype == TYPE_CNAME:
        return names.from_text(rec.value)
    raw = rec.value.encode("utf-8")  # TXT: one character string (config limits it to 255)
    return bytes([len(raw)]) + raw


def _soa(apex: bytes, rule: model.Rule) -> bytes:
    mname = apex
    rname = b"\x0ahostmaster" + apex
    rdata = mname + rname + _SOA_TIMERS.pack(SOA_SERIAL, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE,
                                             rule.ttl)
    return apex + wire.RR_FIXED.pack(TYPE_SOA, CLASS_IN, rule.ttl, len(rdata)) + rdata


# --- building ---------------------------------------------------------------------------------


def zones(cfg: model.Config) -> dict[int, LocalZone]:
    """Builds the local zone of every local rule of *cfg*, by rule index. Raises ConfigError
    listing every problem."""
    problems: list[ConfigProblem] = []
    out: dict[int, LocalZone] = {}
    for rule in cfg.rules:
        if rule.action is not model.RuleAction.LOCAL:
            continue
        path = f"zones[{rule.index}]"
        records = list(rule.records)
        for j, rec in enumerate(rule.records):
            owner = rec.name[2:] if rec.name.startswith("*.") else rec.name
            if not names.is_subdomain(owner, rule.match):
                problems.append(ConfigProblem(
                    f"{path}.records[{j}]",
                    f"{rec.name!r} is not under this rule's match {rule.match!r}"))
        if rule.hosts_file is not None:
            try:
                records.extend(read_hosts(rule.hosts_file, rule.match, rule.ttl))
            except HostsFileError as e:
                problems.append(ConfigProblem(f"{path}.hosts_file", str(e)))
                continue
        carved = [r.match for r in cfg.rules
                  if r.match != rule.match and names.is_subdomain(r.match, rule.match)]
        try:
            out[rule.index] = LocalZone(rule, records, carved)
        except ValueError as e:
            problems.append(ConfigProblem(f"{path}.records", str(e)))
    if problems:
        raise ConfigError(cfg.source, problems, cfg.positions)
    return out


class HostsFileError(ValueError):
    """A hosts file cannot be read, or one of its lines is not `IP name [aliases...]`."""


def read_hosts(path: str, match: str, ttl: int) -> list[model.LocalRecord]:
    """Reads a hosts file: an A (IPv4) or AAAA (IPv6) record for each name and alias under
    *match*. Raises HostsFileError naming the file and the line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise HostsFileError(f"cannot read {path!r}: {e.strerror or e}") from None
    records: list[model.LocalRecord] = []
    for lineno, raw in enumerate(data.splitlines(), 1):
        line = raw.split(b"#", 1)[0].strip()
        if not line:
            continue
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise HostsFileError(f"{path}: line {lineno}: names and addresses must be "
                                 "ASCII (write names in their xn-- form)") from None
        fields = text.split()
        if len(fields) < 2:
            raise HostsFileError(f"{path}: line {lineno}: expected an address and at least "
                                 f"one name, found {text!r}")
        try:
            address = ipaddress.ip_address(fields[0])
        except ValueError:
            raise HostsFileError(f"{path}: line {lineno}: {fields[0]!r} is not an IP "
                                 "address") from None
        rtype = TYPE_A if address.version == 4 else TYPE_AAAA
        value = str(address).split("%", 1)[0]  # an IPv6 scope (fe80::1%lo0) means nothing here
        for name in fields[1:]:
            owner = name.lower().rstrip(".")
            try:
                if "*" in owner:
                    raise ValueError("wildcards are not supported in hosts files; use records")
                names.from_text(owner)
            except ValueError as e:
                raise HostsFileError(f"{path}: line {lineno}: {name!r} is not a host "
                                     f"name: {e}") from None
            if owner and names.is_subdomain(owner, match):
                records.append(model.LocalRecord(owner, rtype, value, ttl))
    return records
