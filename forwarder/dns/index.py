"""What a reply index holds and answers: `Index` (a checked reply, its records and names)
and `Address`. `forwarder.dns.reply.read` makes an Index; everything after it reads the
index instead of walking the wire again:

- the cache: each record's TTL offset and TTL, the answer count, the negative TTL of the
  authority SOA (RFC 2308);
- the answer policy: the names in the answer (CNAME chain, DNAME and HTTPS/SVCB targets,
  owners of addresses) and its addresses (A, AAAA, HTTPS/SVCB ipv4hint/ipv6hint);
- the record strip: where each record starts and ends;
- the query log: the addresses it prints.

A record is a plain tuple (the R_* positions below): an index is built for every
forwarded answer, and a tuple costs a fraction of an object.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from forwarder.dns import names

SECTION_ANSWER, SECTION_AUTHORITY, SECTION_ADDITIONAL = 1, 2, 3
R_START, R_TYPE, R_CLASS, R_TTL_OFF, R_TTL, R_RDATA, R_END, R_SECTION = range(8)
Record = tuple[int, int, int, int, int, int, int, int]

TYPE_A, TYPE_CNAME, TYPE_SOA, TYPE_AAAA, TYPE_DNAME, TYPE_OPT = 1, 5, 6, 28, 39, 41
TYPE_SVCB, TYPE_HTTPS, TYPE_TSIG = 64, 65, 250
OPTION_EDE = 15
SVC_IPV4HINT, SVC_IPV6HINT = 4, 6
MAX_CHAIN = 16  # CNAMEs followed from the query name, as resolvers limit them

_U16 = struct.Struct("!H")


class Address(NamedTuple):
    """One address in a reply and the record that holds it (an HTTPS/SVCB record holds
    one per hint)."""

    owner: bytes  # lower-case wire name
    rtype: int  # 1 (A), 28 (AAAA), 64 (SVCB) or 65 (HTTPS)
    packed: bytes  # 4 or 16 bytes
    section: int
    start: int  # the record's place in the wire: wire[start:end]
    end: int

    @property
    def text(self) -> str:
        """The address in printable form (``52.219.1.1``, ``2600::1``)."""
        return str(ipaddress.ip_address(self.packed))


class Index:
    """A reply read by `read`: its wire without OPT, full rcode, Extended DNS Errors, and
    its records. Made once per reply, never changed."""

    __slots__ = ("_names", "ancount", "ede", "negative", "nscount", "plain", "qend", "rcode",
                 "records", "wire")

    def __init__(self, wire: bytes, rcode: int, ede: tuple[tuple[int, str], ...],
                 records: list[Record], ancount: int, nscount: int, negative: int | None,
                 qend: int, plain: bool) -> None:
        self.wire = wire
        self.rcode = rcode
        self.ede = ede
        self.records = records
        self.ancount = ancount
        self.nscount = nscount
        self.negative = negative  # min(SOA TTL, MINIMUM) of the first authority SOA
        self.qend = qend  # where the question ends (the first record starts)
        # every answer record is owned by the question name and neither chains to another
        # name nor carries hints, and the additional section has no address: the policy's
        # quick path
        self.plain = plain
        self._names: dict[int, bytes] | None = None  # made when a name is first asked for

    def __repr__(self) -> str:
        return (f"Index(rcode={self.rcode}, {len(self.records)} records, "
                f"{len(self.wire)} bytes)")

    # --- names ----------------------------------------------------------------------------

    def name(self, off: int) -> bytes:
        """The lower-case uncompressed wire name at *off*."""
        memo = self._names
        if memo is None:
            memo = self._names = {}
        found = memo.get(off)
        if found is None:
            data = self.wire
            if data[off] >= 0xC0:  # a bare pointer (most owners): the name it aims at
                found = self.name((data[off] & 0x3F) << 8 | data[off + 1])
            else:
                found = names.decompress(data, off)
            memo[off] = found
        return found

    def packed_addresses(self) -> list[bytes]:
        """The answer section's addresses as `addresses` finds them, without their records:
        what a judgement needs unless something is wrong."""
        data = self.wire
        out = []
        for rec in self.records:
            if rec[R_SECTION] != SECTION_ANSWER:
                break
            rtype = rec[R_TYPE]
            if rec[R_CLASS] == 1:
                if rtype == TYPE_A or rtype == TYPE_AAAA:  # noqa: SIM109
                    out.append(data[rec[R_RDATA]:rec[R_END]])
                elif rtype == TYPE_SVCB or rtype == TYPE_HTTPS:  # noqa: SIM109
                    out.extend(svc_hints(data, rec[R_RDATA], rec[R_END]))
        return out

    def qname(self) -> bytes:
        return self.name(12)

    def chain(self) -> list[bytes]:
        """The query name, then each CNAME target followed from it through the answer
        section (at most MAX_CHAIN hops; a loop stops it)."""
        cnames: dict[bytes, bytes] = {}
        for rec in self.records:
            if rec[R_SECTION] != SECTION_ANSWER:
                break
            if rec[R_TYPE] == TYPE_CNAME:
                cnames.setdefault(self.name(rec[R_START]), self.name(rec[R_RDATA]))
        found = [self.qname()]
        for _ in range(MAX_CHAIN):
            target = cnames.get(found[-1])
            if target is None or target in found:
                break
            found.append(target)
        return found

    def answer_names(self) -> list[bytes]:
        """Every name the answer section leads to: the CNAME chain from the query name,
        DNAME targets, HTTPS/SVCB target names, and the owners of address records. A name
        listed once, in that order."""
        found = dict.fromkeys(self.chain())
        for rec in self.records:
            if rec[R_SECTION] != SECTION_ANSWER:
                break
            rtype = rec[R_TYPE]
            if rtype == TYPE_DNAME:
                found.setdefault(self.name(rec[R_RDATA]))
            elif rtype in (TYPE_SVCB, TYPE_HTTPS):
                target = self.name(rec[R_RDATA] + 2)
                found.setdefault(self.name(rec[R_START]) if target == names.ROOT else target)
                found.setdefault(self.name(rec[R_START]))
            elif rtype in (TYPE_A, TYPE_AAAA):
                found.setdefault(self.name(rec[R_START]))
        return list(found)

    # --- addresses --------------------------------------------------------------------------

    def addresses(self, section: int = SECTION_ANSWER) -> list[Address]:
        """The addresses of *section*: A and AAAA records of class IN, and in the answer
        section the ipv4hint/ipv6hint values of HTTPS/SVCB records."""
        out: list[Address] = []
        data = self.wire
        for rec in self.records:
            if rec[R_SECTION] != section or rec[R_CLASS] != 1:
                continue
            rtype = rec[R_TYPE]
            if rtype in (TYPE_A, TYPE_AAAA):
                out.append(Address(self.name(rec[R_START]), rtype, data[rec[R_RDATA]:rec[R_END]],
                                   section, rec[R_START], rec[R_END]))
            elif section == SECTION_ANSWER and rtype in (TYPE_SVCB, TYPE_HTTPS):
                owner = self.name(rec[R_START])
                for packed in svc_hints(data, rec[R_RDATA], rec[R_END]):
                    out.append(Address(owner, rtype, packed, section, rec[R_START], rec[R_END]))
        return out


def svc_hints(data: bytes, rd: int, end: int) -> list[bytes]:
    """The ipv4hint and ipv6hint addresses of a checked HTTPS/SVCB RDATA."""
    pos = rd + 2
    while data[pos] != 0:  # the TargetName (never compressed in SVCB)
        pos += data[pos] + 1
    pos += 1
    found = []
    while pos < end:
        key, length = _U16.unpack_from(data, pos)[0], _U16.unpack_from(data, pos + 2)[0]
        pos += 4
        if key in (SVC_IPV4HINT, SVC_IPV6HINT):
            size = 4 if key == SVC_IPV4HINT else 16
            found.extend(data[a : a + size] for a in range(pos, pos + length, size))
        pos += length
    return found
