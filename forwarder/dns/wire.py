"""Fast DNS wire helpers: read a query's header, question and EDNS, build upstream queries,
match upstream replies to them, add our OPT, truncate, and minimal error replies.

Nothing here builds a general message object: the hot paths read and patch bytes.
Replies inside the forwarder carry no OPT record; `finish` adds the client's OPT
(with Extended DNS Errors) and truncates for UDP, in one place.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from forwarder.dns import names
from forwarder.errors import DropPacket, FormError

HEADER = struct.Struct("!HHHHHH")
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010
OPCODE_MASK = 0x7800

# record types the forwarder looks at itself
TYPE_A, TYPE_CNAME, TYPE_SOA, TYPE_TXT, TYPE_AAAA, TYPE_OPT = 1, 5, 6, 16, 28, 41
TYPE_SVCB, TYPE_HTTPS, TYPE_ANY = 64, 65, 255
CLASS_IN = 1
EDNS_DO = 0x8000
OPTION_EDE = 15

UPSTREAM_UDP_SIZE = 1232  # DNS flag day 2020: avoids IP fragmentation
SERVER_UDP_SIZE = 1232  # what the forwarder advertises to its clients
MIN_UDP_SIZE = 512
MAX_MESSAGE = 65_535  # what a TCP length prefix can carry


class Rcode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16


class Ede(IntEnum):
    """Extended DNS Error info-codes (RFC 8914) the forwarder sends."""

    OTHER = 0
    STALE_ANSWER = 3
    FORGED_ANSWER = 4
    BLOCKED = 15
    PROHIBITED = 18
    NOT_READY = 14
    NO_REACHABLE_AUTHORITY = 22
    NETWORK_ERROR = 23


RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
               5: "REFUSED", 6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH",
               10: "NOTZONE", 16: "BADVERS"}
RCODES = {v: k for k, v in RCODE_NAMES.items()}

QTYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
    "SRV": 33, "NAPTR": 35, "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "NSEC3": 50,
    "SVCB": 64, "HTTPS": 65, "CAA": 257, "ANY": 255, "AXFR": 252, "IXFR": 251,
}
QTYPE_NAMES = {v: k for k, v in QTYPES.items()}


def qtype_from_text(text: str) -> int:
    """Answers the numeric type for `A`, `AAAA`, ... or `TYPE123`. Raises ValueError."""
    t = text.upper()
    if t in QTYPES:
        return QTYPES[t]
    if t.startswith("TYPE") and t[4:].isdigit() and 0 < int(t[4:]) < 65536:
        return int(t[4:])
    raise ValueError(f"unknown record type {text!r}")


def qtype_to_text(qtype: int) -> str:
    return QTYPE_NAMES.get(qtype) or f"TYPE{qtype}"


# --- queries ---------------------------------------------------------------------------


class ParsedQuery(NamedTuple):
    """What `parse_query` read from a client's message."""

    id: int
    flags: int
    qname: bytes  # lower-cased
    qtype: int
    qclass: int
    question: bytes  # as sent (the client's letter case)
    edns: bool
    udp_size: int  # what the client accepts over UDP, within MIN_UDP_SIZE..SERVER_UDP_SIZE
    do: bool
    cd: bool
    edns_version: int


_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__


def parse_query(data: bytes) -> ParsedQuery:
    """Reads header, question and EDNS of a client query.

    Raises:
        DropPacket: fewer than 12 bytes, or a response (QR set): not worth an answer.
        FormError: header readable but the rest malformed (`kind` says which check failed).
    """
    if len(data) < 12:
        raise DropPacket("short")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise DropPacket("response")
    if flags & OPCODE_MASK:
        raise FormError("unsupported opcode", kind="notimp")
    if qdcount != 1:
        raise FormError(f"QDCOUNT is {qdcount}, not 1", kind="qdcount")
    qend = names.read_qname(data, 12)
    off = qend + 4
    end = len(data)
    if off > end:
        raise FormError("question runs past the end of the message")
    memo: names.NameMemo = {}
    for _ in range(ancount + nscount):
        off = _skip_rr(data, off, memo)
    edns = do = False
    udp_size = MIN_UDP_SIZE
    version = 0
    for _ in range(arcount):
        name_off = off
        off = names.walk(data, off, end, memo)
        if off + 10 > end:
            raise FormError("record runs past the end of the message")
        rtype, rclass, ttl, rdlen = RR_FIXED.unpack_from(data, off)
        off += 10 + rdlen
        if off > end:
            raise FormError("record data runs past the end of the message")
        if rtype == TYPE_OPT:
            if edns or data[name_off] != 0:
                raise FormError("more than one OPT record, or OPT not at the root", kind="edns")
            edns = True
            # never more than we advertise: bigger UDP answers fragment and amplify
            udp_size = min(max(rclass, MIN_UDP_SIZE), SERVER_UDP_SIZE)
            version = (ttl >> 16) & 0xFF
            do = bool(ttl & EDNS_DO)
    return _tuple_new(ParsedQuery, (
        ident, flags, data[12:qend].lower(), data[qend] << 8 | data[qend + 1],
        data[qend + 2] << 8 | data[qend + 3], data[12 : qend + 4], edns, udp_size, do,
        bool(flags & CD), version))


def _skip_rr(data: bytes, off: int, memo: names.NameMemo) -> int:
    off = names.walk(data, off, len(data), memo)
    if off + 10 > len(data):
        raise FormError("record runs past the end of the message")
    off += 10 + U16.unpack_from(data, off + 8)[0]
    if off > len(data):
        raise FormError("record data runs past the end of the message")
    return off


def question_of(qname: bytes, qtype: int, qclass: int) -> bytes:
    return qname + struct.pack("!HH", qtype, qclass)


_UPSTREAM_OPT = b"\x00" + struct.pack("!HHIH", TYPE_OPT, UPSTREAM_UDP_SIZE, 0, 0)
_UPSTREAM_OPT_DO = b"\x00" + struct.pack("!HHIH", TYPE_OPT, UPSTREAM_UDP_SIZE, EDNS_DO, 0)


def upstream_query(ident: int, flags: int, question: bytes, do: bool) -> bytes:
    """Builds the query sent upstream: a fresh ID, the client's RD/CD/AD bits and question,
    and our own OPT (1232-byte buffer, the client's DO bit, no options)."""
    return (HEADER.pack(ident, flags & (RD | CD | AD), 1, 0, 0, 1) + question
            + (_UPSTREAM_OPT_DO if do else _UPSTREAM_OPT))


def reply_matches(data: bytes, ident: int, qname: bytes, qtype: int, qclass: int) -> bool:
    """Answers whether *data* is a response to our query: ID, QR, opcode QUERY (ours
    always is) and question (name case-insensitive, type, class) must match. Source
    address is checked by the socket."""
    if len(data) < 12 + len(qname) + 4:
        return False
    rid, flags, qdcount = struct.unpack_from("!HHH", data)
    if rid != ident or not flags & QR or flags & OPCODE_MASK or qdcount != 1:
        return False
    end = 12 + len(qname)
    if data[12:end].lower() != qname:
        return False
    return data[end : end + 4] == struct.pack("!HH", qtype, qclass)


# --- replies to the client ---------------------------------------------------------------


def opt_record(rcode: int, do: bool, ede: tuple[tuple[int, str], ...] | None) -> bytes:
    """Builds our OPT record for a client that sent EDNS."""
    if not ede and rcode < 16:
        return _PLAIN_OPT_DO if do else _PLAIN_OPT
    options = b""
    if ede:
        for code, text in ede:
            raw = text.encode("utf-8")[:400]
            options += struct.pack("!HHH", OPTION_EDE, len(raw) + 2, code) + raw
    ttl = ((rcode >> 4) & 0xFF) << 24 | (EDNS_DO if do else 0)
    return b"\x00" + struct.pack("!HHIH", TYPE_OPT, SERVER_UDP_SIZE, ttl, len(options)) + options


_PLAIN_OPT = b"\x00" + struct.pack("!HHIH", TYPE_OPT, SERVER_UDP_SIZE, 0, 0)
_PLAIN_OPT_DO = b"\x00" + struct.pack("!HHIH", TYPE_OPT, SERVER_UDP_SIZE, EDNS_DO, 0)
ID_FLAGS = struct.Struct("!HH")


def finish(
    q_id: int,
    q_flags: int,
    question: bytes,
    edns: bool,
    do: bool,
    udp_size: int,
    reply_wire: bytes,
    rcode: int,
    ede: tuple[tuple[int, str], ...] | None,
) -> bytes:
    """Turns an internal reply (no OPT, any ID) into the bytes sent to the client.

    Patches the client's ID, opcode, RD and CD bits (RFC 4035 3.2.2: CD is copied from the
    query, whatever the upstream's reply said) and question bytes (the client's letter case),
    clears AD unless the client asked for it (DO or AD), adds our OPT when the client sent
    EDNS, and truncates to *udp_size* (0 for TCP: the 65,535 bytes a length prefix can
    carry) with TC set and the question kept.
    """
    flags = U16.unpack_from(reply_wire, 2)[0]
    flags = ((flags & ~(OPCODE_MASK | RD | CD | 0xF)) | (q_flags & (OPCODE_MASK | RD | CD))
             | (rcode & 0xF) | QR | RA)
    if not (do or q_flags & AD):
        flags &= ~AD
    ar = U16.unpack_from(reply_wire, 10)[0]
    qlen = len(question)
    if edns:
        opt = opt_record(rcode, do, ede)
        out = b"".join((ID_FLAGS.pack(q_id, flags), reply_wire[4:10], U16.pack(ar + 1),
                        question, reply_wire[12 + qlen :], opt))
    else:
        opt = b""
        out = b"".join((ID_FLAGS.pack(q_id, flags), reply_wire[4:12], question,
                        reply_wire[12 + qlen :]))
    limit = udp_size or MAX_MESSAGE
    if len(out) > limit:
        out = HEADER.pack(q_id, flags | TC, 1, 0, 0, 1 if edns else 0) + question + opt
        if len(out) > limit:  # long EDE texts: the client retries over TCP anyway
            out = (HEADER.pack(q_id, flags | TC, 1, 0, 0, 1 if edns else 0) + question
                   + opt_record(rcode, do, None))
    return out


def synth_reply(
    q_flags: int, question: bytes, rcode: int, aa: bool = False,
    answers: bytes = b"", ancount: int = 0, authority: bytes = b"", nscount: int = 0,
) -> bytes:
    """Builds an internal reply (no OPT) to a question: an error or a synthesised answer."""
    flags = QR | RA | (q_flags & (RD | CD)) | (AA if aa else 0) | (rcode & 0xF)
    return HEADER.pack(0, flags, 1, ancount, nscount, 0) + question + answers + authority


def header_only_reply(data: bytes, rcode: int) -> bytes:
    """FORMERR/NOTIMP for a message whose question could not be read: header only."""
    ident, flags = struct.unpack_from("!HH", data)
    flags = QR | (flags & (OPCODE_MASK | RD)) | rcode
    return HEADER.pack(ident, flags, 0, 0, 0, 0)
