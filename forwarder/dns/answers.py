"""Find and judge the addresses in an upstream answer, straight from the wire.

This module owns the data side of the answer policy (DESIGN.md "Answer policy"):

- `scan_response` walks a response's wire format once (struct and bytes, following
  compression pointers with a loop guard and bounds checks, no DNS library) and
  returns the question, the CNAME chain and every address: A, AAAA and the
  ipv4hint/ipv6hint SvcParams of HTTPS/SVCB records in the answer section, and
  A/AAAA in the additional section.
- `SuffixSet` / `is_under` answer "is this name under a protected suffix?" label-wise.
- `judge` applies a protected-suffix set and an allowed `NetworkSet` to a scan.

What to *do* about a verdict (rewrite, refuse, strip, ...) is the policy stage's job;
`forwarder.dns.recordstrip` removes records from the wire for it.

The result types are immutable NamedTuples rather than frozen dataclasses: this code
runs for every forwarded answer and builds one per address, and a frozen dataclass
costs several times more to build. Use them by attribute.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from forwarder.dns import netsets
from forwarder.dns.wire import (
    PLAIN_LABEL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_HTTPS,
    TYPE_SVCB,
    label_to_text,
)

SECTION_ANSWER = 1
SECTION_AUTHORITY = 2
SECTION_ADDITIONAL = 3

SVC_KEY_IPV4HINT = 4
SVC_KEY_IPV6HINT = 6

MAX_CHAIN_HOPS = 16  # CNAMEs followed from the query name; matches common resolver limits
_MAX_POINTER_HOPS = 127  # a 255-byte name has at most 127 labels, so more hops is abuse

_HEADER = struct.Struct("!6H")
_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_U16 = struct.Struct("!H")
_unpack_header = _HEADER.unpack_from
_unpack_rr = _RR_FIXED.unpack_from
_unpack_u16 = _U16.unpack_from

# Printable bytes a label shows unescaped (wire.label_to_text); with "." for whole names.
_PLAIN = PLAIN_LABEL + b"."
# Label lengths 1-32 become ".", A-Z become a-z (see _read_name).
_WIRE_TO_TEXT = bytes(
    0x2E if 1 <= c <= 32 else c + 32 if 0x41 <= c <= 0x5A else c for c in range(256)
)
_WANTED = frozenset((TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_HTTPS, TYPE_SVCB))
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__


class ScanError(ValueError):
    """The response is not well-formed DNS wire format (truncated, bad pointer, ...)."""


class Address(NamedTuple):
    """One address found in a response, and where its resource record sits in the wire.

    ``offset``/``length`` cover the whole resource record (owner name to end of
    RDATA), so ``wire[:offset] + wire[offset + length:]`` drops it. An HTTPS/SVCB
    record yields one Address per hint, all with the same range.
    """

    owner: str  # lower-case, no trailing dot
    rtype: int  # 1 (A), 28 (AAAA), 64 (SVCB) or 65 (HTTPS)
    packed: bytes  # 4 or 16 bytes
    section: int  # 1 answer, 3 additional
    offset: int
    length: int

    @property
    def text(self) -> str:
        """The address in printable form (``52.219.1.1``, ``2600::1``)."""
        return str(ipaddress.ip_address(bytes(self.packed)))


class AnswerScan(NamedTuple):
    """What `scan_response` found in one response."""

    qname: str  # lower-case, no trailing dot, "" for the root (and when there is no question)
    qtype: int  # 0 when there is no question
    rcode: int  # header RCODE (4 bits; the EDNS extension is not applied)
    chain: tuple[str, ...]  # qname, then each CNAME target followed from the answer section
    addresses: tuple[Address, ...]  # answer section: A, AAAA, HTTPS/SVCB hints
    additional_addresses: tuple[Address, ...]  # additional section: A, AAAA


class Judgement(NamedTuple):
    """The policy verdict on one scan.

    ``protected_name`` is None when no name is protected: nothing was judged and the
    answer passes. Otherwise ``violations`` lists the answer-section addresses
    outside the allowed networks and ``additional_violations`` those of the
    additional section. ``ok`` looks at the answer section only: for a protected name
    the policy drops every additional-section address anyway
    (``scan.additional_addresses``), allowed or not.
    """

    protected_name: str | None
    violations: tuple[Address, ...] = ()
    additional_violations: tuple[Address, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no answer-section address violates the policy."""
        return not self.violations


_NOT_JUDGED = Judgement(None)


# -- names -------------------------------------------------------------------------------


def _labels_text(wire: bytes, off: int, stop: int) -> str:
    """Return the labels from *off* to *stop* as lower-case text, escaped by
    `wire.label_to_text`. The exact, slower path of `_read_name`: long labels and unusual
    bytes."""
    out = []
    while off < stop:
        length = wire[off]
        out.append(label_to_text(wire[off + 1 : off + 1 + length].lower()))
        off += length + 1
    return ".".join(out)


_Memo = dict[int, tuple[str, int, int]]
_Regions = list[tuple[int, int, str, int, int]]


def _read_name(
    wire: bytes, off: int, memo: _Memo, regions: _Regions, depth: int = 0
) -> tuple[str, int, int]:
    """Return (text, end, wire_length) of the name at *off*; *end* is where it stops in place.

    Results are memoised by offset: a name starting at an offset always reads the
    same, and most owner names are pointers to the question name. *regions* lists
    the names read on the fast path as (start, stop, text, end, wire_length), so
    that a pointer into the middle of one (``amazonaws.com`` inside the question
    ``s3.amazonaws.com``, say) is a slice of its text, not another decode.

    Raises:
        ScanError: a pointer that does not point strictly before the name it is in
            (which rules out loops), too many pointer hops, an extended label type
            or a name longer than 255 bytes.
        IndexError: the name runs past the end of the message.
    """
    hit = memo.get(off)
    if hit is not None:
        return hit
    start = off
    length = wire[off]
    labels = 0
    while 0 < length < 33:  # short labels: their length bytes translate to "." below
        off += length + 1
        length = wire[off]
        labels += 1
    long_labels = False
    while 0 < length < 64:  # a label of 33 to 63 bytes: decode label by label
        long_labels = True
        off += length + 1
        length = wire[off]
        labels += 1
    if length == 0:
        end = off + 1
        suffix = ""
        suffix_len = 1
    elif length >= 0xC0:
        target = ((length & 0x3F) << 8) | wire[off + 1]
        end = off + 2
        if target >= start:
            raise ScanError(f"compression pointer at offset {off} does not point backwards")
        if depth >= _MAX_POINTER_HOPS:
            raise ScanError(f"too many compression pointers in name at offset {start}")
        hit = memo.get(target)
        if hit is None:
            for r_start, r_stop, r_text, r_end, r_len in regions:
                # In fast-path text a "." is exactly a label boundary.
                if r_start < target < r_stop and r_text[target - r_start - 1] == ".":
                    hit = (r_text[target - r_start :], r_end, r_len - (target - r_start))
                    memo[target] = hit
                    break
            else:
                hit = _read_name(wire, target, memo, regions, depth + 1)
        suffix, _, suffix_len = hit
    else:
        raise ScanError(f"unsupported label type 0x{length:02x} at offset {off}")
    if off == start:
        result = (suffix, end, suffix_len)
    else:
        wire_len = off - start + suffix_len
        if wire_len > 255:
            raise ScanError(f"name at offset {start} is longer than 255 bytes")
        # One C pass turns "\x02s3\x0eap-northeast-1" into "s3.ap-northeast-1" and lowers
        # it; a label byte that also became "." (a "." or control byte) shows in the count.
        raw = wire[start + 1 : off].translate(_WIRE_TO_TEXT)
        if long_labels or raw.count(46) != labels - 1 or raw.translate(None, _PLAIN):
            text = _labels_text(wire, start, off)
            if suffix:
                text = text + "." + suffix
        else:
            text = raw.decode("ascii")
            if suffix:
                text = text + "." + suffix
            if labels > 1:
                regions.append((start, off, text, end, wire_len))
        result = (text, end, wire_len)
    memo[start] = result
    return result


def _skip_name(wire: bytes, off: int) -> int:
    """Return the offset just past the name at *off*, without following pointers.

    Raises:
        ScanError: an extended label type.
        IndexError: the name runs past the end of the message.
    """
    while True:
        length = wire[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            wire[off + 1]
            return off + 2
        if length > 63:
            raise ScanError(f"unsupported label type 0x{length:02x} at offset {off}")
        off += length + 1


# -- scanning -------------------------------------------------------------------------------


def _svc_hints(
    wire: bytes,
    pos: int,
    rd_end: int,
    owner: str,
    rtype: int,
    rr_start: int,
    memo: _Memo,
    regions: _Regions,
) -> list[Address]:
    """Return the ipv4hint/ipv6hint addresses in the HTTPS/SVCB RDATA at *pos*.

    Raises:
        ScanError: the RDATA is malformed.
    """
    if pos + 2 > rd_end:
        raise ScanError(f"short SVCB/HTTPS rdata at offset {pos}")
    _, pos, _ = _read_name(wire, pos + 2, memo, regions)  # skip SvcPriority; TargetName
    found: list[Address] = []
    rr_len = rd_end - rr_start
    while pos < rd_end:
        if pos + 4 > rd_end:
            raise ScanError(f"truncated SvcParam at offset {pos}")
        key = _unpack_u16(wire, pos)[0]
        vlen = _unpack_u16(wire, pos + 2)[0]
        pos += 4
        vend = pos + vlen
        if vend > rd_end:
            raise ScanError(f"SvcParam at offset {pos - 4} runs past its record")
        if key in (SVC_KEY_IPV4HINT, SVC_KEY_IPV6HINT):
            size = 4 if key == SVC_KEY_IPV4HINT else 16
            if vlen == 0 or vlen % size:
                raise ScanError(f"bad {'ipv4hint' if size == 4 else 'ipv6hint'} length {vlen}")
            for a in range(pos, vend, size):
                found.append(
                    _tuple_new(
                        Address, (owner, rtype, wire[a : a + size], 1, rr_start, rr_len)
                    )
                )
        pos = vend
    if pos != rd_end:  # only the TargetName can overrun: the loop stops at vend <= rd_end
        raise ScanError(f"SVCB/HTTPS TargetName runs past its record at offset {rr_start}")
    return found


def _address(wire: bytes, owner: str, rtype: int, rd: int, end: int, section: int,
             rr_start: int) -> Address:
    """The Address of an A/AAAA record whose rdata is wire[rd:end]. Raises ScanError."""
    if end - rd != (4 if rtype == 1 else 16):
        raise ScanError(f"bad rdlength {end - rd} for type {rtype} at {rr_start}")
    return _tuple_new(Address, (owner, rtype, wire[rd:end], section, rr_start, end - rr_start))


def scan_response(wire: bytes) -> AnswerScan:
    """Return the question, CNAME chain and addresses of the DNS response *wire*.

    Only class IN records are considered. The chain starts at the query name and
    follows CNAME records of the answer section (at most 16 hops; a loop stops it).

    Raises:
        ScanError: *wire* is malformed: short header, truncated record, bad
            compression pointer, malformed A/AAAA/CNAME/HTTPS/SVCB RDATA.
    """
    # Hot path: literal type codes (1 A, 28 AAAA, 5 CNAME, 64 SVCB, 65 HTTPS, class 1 IN)
    # instead of the module constants, which would cost a global lookup each.
    try:
        _id, flags, qdcount, ancount, nscount, arcount = _unpack_header(wire, 0)
        memo: _Memo = {}
        regions: _Regions = []
        n = len(wire)
        qname = ""
        qtype = 0
        pos = 12
        if qdcount:
            qname, pos, _ = _read_name(wire, pos, memo, regions)
            qtype = _unpack_u16(wire, pos)[0]
            pos += 4
            for _ in range(1, qdcount):
                pos = _skip_name(wire, pos) + 4
        addresses: list[Address] = []
        cnames: dict[str, str] | None = None
        for _ in range(ancount):
            rr_start = pos
            first = wire[pos]
            if first >= 0xC0:  # the usual owner: one pointer to a name read before
                target = ((first & 0x3F) << 8) | wire[pos + 1]
                pos += 2
            else:
                target = -1
                pos = _skip_name(wire, pos)
            rtype, rclass, _ttl, rdlen = _unpack_rr(wire, pos)
            rd = pos + 10
            pos = rd + rdlen
            if pos > n:
                raise ScanError(f"record at offset {rr_start} runs past the end of the message")
            if rclass != 1 or rtype not in _WANTED:
                continue
            hit = memo.get(target)  # only names before this record are memoised: no loop
            owner = hit[0] if hit is not None else _read_name(wire, rr_start, memo, regions)[0]
            if rtype == 1 or rtype == 28:
                addresses.append(_address(wire, owner, rtype, rd, pos, 1, rr_start))
            elif rtype == 5:
                cname, cname_end, _ = _read_name(wire, rd, memo, regions)
                if cname_end != pos:
                    raise ScanError(f"CNAME rdata does not match rdlength at {rr_start}")
                if cnames is None:
                    cnames = {owner: cname}
                else:
                    cnames.setdefault(owner, cname)
            else:
                addresses.extend(_svc_hints(wire, rd, pos, owner, rtype, rr_start, memo, regions))
        for _ in range(nscount):
            pos = _skip_name(wire, pos)
            pos += 10 + _unpack_rr(wire, pos)[3]
        additional: list[Address] = []
        for _ in range(arcount):
            rr_start = pos
            pos = _skip_name(wire, pos)
            rtype, rclass, _ttl, rdlen = _unpack_rr(wire, pos)
            rd = pos + 10
            pos = rd + rdlen
            if pos > n:
                raise ScanError(f"record at offset {rr_start} runs past the end of the message")
            if (rtype == 1 or rtype == 28) and rclass == 1:
                owner = _read_name(wire, rr_start, memo, regions)[0]
                additional.append(_address(wire, owner, rtype, rd, pos, 3, rr_start))
    except (IndexError, struct.error):
        raise ScanError("truncated message") from None
    if pos > n:  # only an authority record can still overrun unchecked
        raise ScanError("message ends inside the authority section")
    if cnames is None:
        chain: tuple[str, ...] = (qname,) if qdcount else ()
    else:
        names = [qname]
        name: str | None = qname
        for _ in range(MAX_CHAIN_HOPS):
            name = cnames.get(name)  # type: ignore[arg-type]
            if name is None or name in names:
                break
            names.append(name)
        chain = tuple(names) if qdcount else ()
    return _tuple_new(
        AnswerScan, (qname, qtype, flags & 0xF, chain, tuple(addresses), tuple(additional))
    )


# -- suffixes and judgement ------------------------------------------------------------------


def _normalise(name: str) -> str:
    name = name.strip().lower()
    return "" if name == "." else name.rstrip(".")


class SuffixSet:
    """A frozen set of domain suffixes, matched label-wise and case-insensitively.

    ``amazonaws.com`` covers ``amazonaws.com`` and ``s3.amazonaws.com`` but not
    ``notamazonaws.com``. The root (``.`` or ``""``) covers every name.
    """

    __slots__ = ("_regex", "_root", "_set", "_tails")

    def __init__(self, suffixes: Iterable[str]) -> None:
        if isinstance(suffixes, str):
            raise TypeError("SuffixSet takes an iterable of suffixes, not one string")
        found = frozenset(_normalise(s) for s in suffixes)
        setter = object.__setattr__  # the class refuses attribute assignment
        setter(self, "_set", found)
        setter(self, "_root", "" in found)
        # str.endswith with a tuple is a C-speed reject for names under none of them.
        setter(self, "_tails", tuple(s for s in found if s))
        # Then the label-wise test in C: skip whole labels, fewest first (longest suffix
        # wins), and the rest must be a suffix. Faster than a label walk in Python. A label
        # is read as dnspython writes it: "\." (and any "\x") is part of a label, not a
        # boundary, so a name matches as its wire form would.
        pattern = "|".join(re.escape(s) for s in sorted(found, key=len, reverse=True) if s)
        regex = (re.compile(rf"(?:(?:[^.\\]|\\.)*\.)*?({pattern})\Z") if pattern
                 else re.compile(r"(?!)"))
        setter(self, "_regex", regex.match)

    def matches(self, name: str) -> str | None:
        """Return the longest suffix in the set that *name* is under, or None.

        The root matches as ``""``: test the result with ``is not None``.
        """
        name = name.lower()
        if name.endswith("."):
            name = name.rstrip(".")
        return self._match(name)

    def _match(self, name: str) -> str | None:
        """`matches` for a name already lower-case without a trailing dot (scan output)."""
        if name.endswith(self._tails):
            found = self._regex(name)
            if found is not None:
                return found.group(1)
        return "" if self._root else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.matches(name) is not None

    @property
    def suffixes(self) -> frozenset[str]:
        """The normalised suffixes (lower-case, no trailing dot; root is "")."""
        return self._set

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._set))

    def __len__(self) -> int:
        return len(self._set)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SuffixSet):
            return NotImplemented
        return self._set == other._set

    def __hash__(self) -> int:
        return hash(self._set)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SuffixSet is immutable; cannot set {name!r}")

    def __str__(self) -> str:
        return ", ".join(s or "." for s in sorted(self._set))

    def __repr__(self) -> str:
        return f"SuffixSet({sorted(self._set)!r})"


def is_under(name: str, suffixes: SuffixSet | Iterable[str]) -> bool:
    """Answer whether *name* equals or lies under one of *suffixes*, label-wise."""
    if not isinstance(suffixes, SuffixSet):
        suffixes = SuffixSet([suffixes] if isinstance(suffixes, str) else suffixes)
    return suffixes.matches(name) is not None


def judge(scan: AnswerScan, protected: SuffixSet, allowed: netsets.NetworkSet) -> Judgement:
    """Judge the addresses of *scan* for names under *protected* suffixes.

    The answer is judged when any name of the CNAME chain is protected (out of a
    protected suffix and back in counts) or, failing that, when the owner of any
    answer-section address is (an address for a protected name the chain does not
    reach, e.g. past the hop limit). Then every answer-section address outside
    *allowed* is a violation, whatever its owner. Otherwise nothing is judged.
    """
    match = protected._match
    name: str | None = None
    for candidate in scan.chain:
        if match(candidate) is not None:
            name = candidate
            break
    else:
        last = None
        for a in scan.addresses:
            owner = a.owner
            if owner is last:  # owners of one RRset are one memoised string
                continue
            if match(owner) is not None:
                name = owner
                break
            last = owner
        else:
            return _NOT_JUDGED
    inside = allowed.contains_packed
    bad = [a for a in scan.addresses if not inside(a.packed)]
    extra = scan.additional_addresses
    if extra:
        extra = tuple([a for a in extra if not inside(a.packed)])
    return _tuple_new(Judgement, (name, tuple(bad), extra))
