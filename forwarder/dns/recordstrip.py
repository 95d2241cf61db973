"""Remove whole resource records from a response's wire and fix its counts: the answer
policy's `strip` action, and the removal of additional-section addresses from protected
answers.

Compression pointers that aim past a removed record are moved down; when a pointer would
be left aiming into a removed record (or anywhere but a label of a remaining name), the
message is rebuilt with dnslib instead. The addresses to remove come from
`answers.scan_response`, which says where each record sits in the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from forwarder.dns.answers import (
    SECTION_ADDITIONAL,
    SECTION_ANSWER,
    SECTION_AUTHORITY,
    Address,
    ScanError,
)
from forwarder.dns.wire import HEADER, RR_FIXED

_unpack_header = HEADER.unpack_from
_unpack_rr = RR_FIXED.unpack_from  # type, class, ttl, rdlength

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
class _Record:
    offset: int
    end: int
    section: int
    index: int
    pointers: list[int]  # positions of the compression pointers in its names
    labels: list[int]  # offsets of the labels of its names: where a pointer may aim


def _walk_name(wire: bytes, off: int, pointers: list[int], labels: list[int]) -> int:
    """Walk the name at *off* in place, noting its labels and pointer; return its end."""
    while True:
        length = wire[off]
        if length >= 0xC0:
            wire[off + 1]  # bounds check
            pointers.append(off)
            return off + 2
        if length > 63:
            raise ScanError(f"unsupported label type 0x{length:02x} at offset {off}")
        labels.append(off)  # the root label too: a pointer may aim at it
        if length == 0:
            return off + 1
        off += length + 1


def _layout(wire: bytes) -> tuple[_Record, list[_Record]]:
    """Return the question section (as a pseudo-record) and every resource record."""
    _id, _flags, qdcount, ancount, nscount, arcount = _unpack_header(wire, 0)
    n = len(wire)
    pos = 12
    question = _Record(12, 12, 0, 0, [], [])
    for _ in range(qdcount):
        pos = _walk_name(wire, pos, question.pointers, question.labels) + 4
    question.end = pos
    records: list[_Record] = []
    for section, count in (
        (SECTION_ANSWER, ancount), (SECTION_AUTHORITY, nscount), (SECTION_ADDITIONAL, arcount)
    ):
        for index in range(count):
            rec = _Record(pos, 0, section, index, [], [])
            pos = _walk_name(wire, pos, rec.pointers, rec.labels)
            rtype, _rclass, _ttl, rdlen = _unpack_rr(wire, pos)
            rd = pos + 10
            pos = rd + rdlen
            if pos > n:
                raise ScanError(f"record at offset {rec.offset} runs past the end of the message")
            for step in _NAME_LAYOUTS.get(rtype, ()):
                if rd >= pos:
                    break
                if step == "n":
                    rd = _walk_name(wire, rd, rec.pointers, rec.labels)
                elif step == "s":
                    rd += 1 + wire[rd]
                else:
                    rd += step  # type: ignore[operator]
            if rd > pos:
                raise ScanError(f"rdata of the record at offset {rec.offset} overruns it")
            rec.end = pos
            records.append(rec)
    if pos > n:
        raise ScanError("message ends inside the question section")
    return question, records


def strip_records(wire: bytes, addresses: Iterable[Address]) -> bytes:
    """Return *wire* without the resource records holding *addresses*, counts fixed.

    Whole records go: an HTTPS/SVCB record with one bad hint is dropped entirely
    (hints are only hints; the client falls back to A/AAAA queries). Several
    addresses of one record are fine. Compression pointers that aim past a removed
    record are moved down. If a remaining pointer aims anywhere but a label of a
    remaining name (into a removed record, say, or into bytes that are no name), the
    message is rebuilt with dnslib instead: rare, as compressors aim at the first
    occurrence of a name, normally the question.

    Raises:
        ScanError: *wire* is malformed (also when dnslib cannot rebuild it), or an
            address does not match a record of *wire* (it came from another message).
    """
    try:
        question, records = _layout(wire)
    except (IndexError, struct.error):
        raise ScanError("truncated message") from None
    by_offset = {r.offset: r for r in records}
    drop: dict[int, _Record] = {}
    for a in addresses:
        rec = by_offset.get(a.offset)
        if rec is None or rec.end - rec.offset != a.length or rec.section != a.section:
            raise ScanError(f"no record at offset {a.offset} length {a.length} in this message")
        drop[rec.offset] = rec
    if not drop:
        return wire
    kept = [question] + [r for r in records if r.offset not in drop]
    targets = {label for r in kept for label in r.labels}
    removed = sorted((r.offset, r.end) for r in drop.values())
    out = bytearray(wire)
    for rec in kept:
        for p in rec.pointers:
            target = ((wire[p] & 0x3F) << 8) | wire[p + 1]
            if target not in targets:  # a removed name, or not a name at all
                return _rebuild(wire, list(drop.values()))
            new = target
            for start, end in removed:
                if target < start:
                    break
                new -= end - start
            if new != target:
                out[p] = 0xC0 | (new >> 8)
                out[p + 1] = new & 0xFF
    counts = list(_unpack_header(wire, 0))
    for rec in drop.values():
        counts[2 + rec.section] -= 1
    HEADER.pack_into(out, 0, *counts)
    pieces = []
    last = 0
    for start, end in removed:
        pieces.append(out[last:start])
        last = end
    pieces.append(out[last:])
    return b"".join(pieces)


def _rebuild(wire: bytes, drop: list[_Record]) -> bytes:
    """Rebuild *wire* with dnslib without the *drop* records (the slow, safe path)."""
    import dnslib  # deferred: only this rare path needs it

    try:
        msg = dnslib.DNSRecord.parse(wire)
    except Exception as e:  # dnslib raises several types on bad input
        raise ScanError(f"cannot rebuild message: {e}") from None
    gone = {(r.section, r.index) for r in drop}
    msg.rr = [rr for i, rr in enumerate(msg.rr) if (SECTION_ANSWER, i) not in gone]
    msg.auth = [rr for i, rr in enumerate(msg.auth) if (SECTION_AUTHORITY, i) not in gone]
    msg.ar = [rr for i, rr in enumerate(msg.ar) if (SECTION_ADDITIONAL, i) not in gone]
    return bytes(msg.pack())
