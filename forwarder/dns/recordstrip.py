"""Remove whole resource records from a reply's wire and fix its counts: the answer
policy's `strip` action, the removal of additional-section addresses from protected
answers, and taking out an OPT record that other records follow.

Where records sit comes from the reply's Index (forwarder.dns.reply), which checked the
message already. Compression pointers that aim past a removed record are moved down; when
a pointer would be left aiming into a removed record (or anywhere but a label of a
remaining name), the message is rebuilt with dnslib instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from forwarder.dns.index import (
    R_END,
    R_RDATA,
    R_SECTION,
    R_START,
    R_TYPE,
    SECTION_ADDITIONAL,
    SECTION_ANSWER,
    SECTION_AUTHORITY,
    Address,
    Index,
    Record,
)
from forwarder.dns.wire import HEADER
from forwarder.errors import FormError

_unpack_header = HEADER.unpack_from

# RDATA layouts whose domain names may be compressed (RFC 1035 types, and those RFC 3597
# section 4 says receivers must decompress). Each entry: the steps to walk the RDATA,
# "n" a name, an int a fixed-size field, "s" a character-string.
_NAME_LAYOUTS: dict[int, tuple[int | str, ...]] = {
    2: ("n",), 3: ("n",), 4: ("n",), 5: ("n",), 7: ("n",), 8: ("n",), 9: ("n",),
    12: ("n",), 39: ("n",),  # NS MD MF CNAME MB MG MR PTR DNAME
    6: ("n", "n"), 14: ("n", "n"), 17: ("n", "n"),  # SOA (rest fixed) MINFO RP
    15: (2, "n"), 18: (2, "n"), 21: (2, "n"), 36: (2, "n"),  # MX AFSDB RT KX
    26: (2, "n", "n"), 33: (6, "n"), 35: (4, "s", "s", "s", "n"),  # PX SRV NAPTR
    30: ("n",), 47: ("n",), 24: (18, "n"), 46: (18, "n"),  # NXT NSEC SIG RRSIG
    64: (2, "n"), 65: (2, "n"),  # SVCB HTTPS TargetName
}


@dataclass(slots=True)
class _Names:
    """Where one record's (or the question's) names have pointers, and where labels start."""

    pointers: list[int]  # positions of the compression pointers in its names
    labels: list[int]  # offsets of the labels of its names: where a pointer may aim


class _NotAName(Exception):
    """RDATA that a layout says holds a name does not (a type the reader checks as opaque
    data, as dnspython does: MB, MD, NXT, ...)."""


def _walk_name(wire: bytes, off: int, found: _Names, end: int) -> int:
    """Walks the name at *off* in place, within *end*, noting its labels and pointer;
    answers its end. Raises _NotAName when there is no name there."""
    while True:
        if off >= end:
            raise _NotAName
        length = wire[off]
        if length >= 0xC0:
            if off + 2 > end:
                raise _NotAName
            found.pointers.append(off)
            return off + 2
        if length > 63:
            raise _NotAName
        found.labels.append(off)  # the root label too: a pointer may aim at it
        if length == 0:
            return off + 1
        off += length + 1


def _names_of(wire: bytes, rec: Record) -> _Names:
    found = _Names([], [])
    _walk_name(wire, rec[R_START], found, rec[R_RDATA])
    rd, end = rec[R_RDATA], rec[R_END]
    owner = _Names(list(found.pointers), list(found.labels))
    try:
        for step in _NAME_LAYOUTS.get(rec[R_TYPE], ()):
            if rd >= end:
                break
            if step == "n":
                rd = _walk_name(wire, rd, found, end)
            elif step == "s":
                rd += 1 + wire[rd]
            else:
                rd += step  # type: ignore[operator]
    except _NotAName:  # opaque data: nothing in it to move, only the owner's name
        return owner
    return found


def strip_records(index: Index, addresses: Iterable[Address]) -> bytes:
    """The reply's wire without the resource records holding *addresses*, counts fixed.

    Whole records go: an HTTPS/SVCB record with one bad hint is dropped entirely (hints
    are only hints; the client falls back to A/AAAA queries). Several addresses of one
    record are fine.

    Raises:
        FormError: an address does not match a record of the reply (it came from another
            message), or the message cannot be rebuilt.
    """
    by_start = {rec[R_START]: rec for rec in index.records}
    drop: list[Record] = []
    for a in addresses:
        rec = by_start.get(a.start)
        if rec is None or rec[R_END] != a.end or rec[R_SECTION] != a.section:
            raise FormError(f"no record at offset {a.start} in this message")
        if rec not in drop:
            drop.append(rec)
    return remove(index, drop)


def remove(index: Index, drop: list[Record]) -> bytes:
    """The reply's wire without the records *drop* (records of *index*), counts fixed.

    Compression pointers that aim past a removed record are moved down. If a remaining
    pointer aims anywhere but a label of a remaining name (into a removed record, say),
    the message is rebuilt with dnslib instead: rare, as compressors aim at the first
    occurrence of a name, normally the question.

    Raises:
        FormError: dnslib cannot rebuild the message.
    """
    wire = index.wire
    if not drop:
        return wire
    gone = {rec[R_START] for rec in drop}
    question = _Names([], [])
    off = 12
    for _ in range(_unpack_header(wire, 0)[2]):
        off = _walk_name(wire, off, question, len(wire)) + 4
    kept = [question] + [_names_of(wire, r) for r in index.records if r[R_START] not in gone]
    targets = {label for names in kept for label in names.labels}
    removed = sorted((r[R_START], r[R_END]) for r in drop)
    out = bytearray(wire)
    for names in kept:
        for p in names.pointers:
            target = ((wire[p] & 0x3F) << 8) | wire[p + 1]
            if target not in targets:  # a removed name, or not a name at all
                return _rebuild(index, drop)
            new = target
            for start, end in removed:
                if target < start:
                    break
                new -= end - start
            if new != target:
                out[p] = 0xC0 | (new >> 8)
                out[p + 1] = new & 0xFF
    counts = list(_unpack_header(wire, 0))
    for rec in drop:
        counts[2 + rec[R_SECTION]] -= 1
    HEADER.pack_into(out, 0, *counts)
    pieces = []
    last = 0
    for start, end in removed:
        pieces.append(out[last:start])
        last = end
    pieces.append(out[last:])
    return b"".join(pieces)


def _rebuild(index: Index, drop: list[Record]) -> bytes:
    """Rebuilds the reply with dnslib without the *drop* records (the slow, safe path)."""
    import dnslib  # deferred: only this rare path needs it

    try:
        msg = dnslib.DNSRecord.parse(index.wire)
    except Exception as e:  # dnslib raises several types on bad input
        raise FormError(f"cannot rebuild message: {e}") from None
    gone = set()
    counters = {SECTION_ANSWER: 0, SECTION_AUTHORITY: 0, SECTION_ADDITIONAL: 0}
    drop_starts = {rec[R_START] for rec in drop}
    for rec in index.records:
        section = rec[R_SECTION]
        if rec[R_START] in drop_starts:
            gone.add((section, counters[section]))
        counters[section] += 1
    msg.rr = [rr for i, rr in enumerate(msg.rr) if (SECTION_ANSWER, i) not in gone]
    msg.auth = [rr for i, rr in enumerate(msg.auth) if (SECTION_AUTHORITY, i) not in gone]
    msg.ar = [rr for i, rr in enumerate(msg.ar) if (SECTION_ADDITIONAL, i) not in gone]
    return bytes(msg.pack())
