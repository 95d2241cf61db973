"""Fast DNS wire helpers: read a query's header, question and EDNS, build upstream queries,
check upstream replies, strip and add OPT, truncate, and minimal error replies.

Nothing here builds a general message object: the hot paths read and patch bytes.
Replies inside the forwarder carry no OPT record; `finish` adds the client's OPT
(with Extended DNS Errors) and truncates for UDP, in one place.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

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


# --- names -----------------------------------------------------------------------------


def skip_name(data: bytes, off: int) -> int:
    """Answers the offset just past the (possibly compressed) name at *off*. Raises FormError."""
    end = len(data)
    while True:
        if off >= end:
            raise FormError("name runs past the end of the message")
        length = data[off]
        if length == 0:
            return off + 1
        if length & 0xC0 == 0xC0:
            if off + 2 > end:
                raise FormError("truncated compression pointer")
            return off + 2
        if length & 0xC0:
            raise FormError("bad label type")
        off += length + 1


def read_qname(data: bytes, off: int) -> int:
    """Answers the end of the uncompressed question name at *off*, checking label rules."""
    end = len(data)
    start = off
    while True:
        if off >= end:
            raise FormError("question name runs past the end of the message")
        length = data[off]
        if length == 0:
            off += 1
            if off - start > 255:
                raise FormError("question name longer than 255 octets")
            return off
        if length > 63:
            raise FormError("compressed or bad label in the question")
        off += length + 1


# Printable bytes a label shows as they are; the rest are escaped (RFC 1035 5.1, as dig and
# dnspython print them): `\\.` for the specials, `\\DDD` for anything unprintable.
PLAIN_LABEL = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')
_ESCAPED = tuple(
    chr(c) if c in PLAIN_LABEL else "\\" + chr(c) if 0x21 <= c < 0x7F else f"\\{c:03d}"
    for c in range(256)
)


def label_to_text(label: bytes) -> str:
    """Answers the presentation form of one label: the one escaping of names in the
    forwarder, so that no name reaches a log, an EDE text or a hook with a raw control
    character, newline, ESC or space in it (RFC 1035 5.1 `\\DDD`, as dig prints it)."""
    if not label.translate(None, PLAIN_LABEL):
        return label.decode("ascii")
    return "".join([_ESCAPED[c] for c in label])


def labels_to_text(labels: Iterable[bytes]) -> str:
    """Answers the presentation form (no trailing dot; "." for root) of a name's labels."""
    return ".".join([label_to_text(label) for label in labels]) or "."


def name_to_text(name: bytes) -> str:
    """Answers the presentation form (no trailing dot; "." for root) of an uncompressed wire
    name, each label escaped by `label_to_text`."""
    labels = []
    off = 0
    while name[off]:
        n = name[off]
        labels.append(name[off + 1 : off + 1 + n])
        off += n + 1
    return labels_to_text(labels)


def text_to_name(text: str) -> bytes:
    """Answers the lower-case wire form of a presentation name. Raises ValueError."""
    out = bytearray()
    for label in text_to_labels(text):
        out.append(len(label))
        out += label.lower()
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"name {text.strip()!r} is longer than 255 octets")
    return bytes(out)


def text_to_labels(text: str) -> list[bytes]:
    """Answers the labels of a presentation name (no root label; [] for the root), reading
    the escapes `label_to_text` writes (`\\.`, `\\DDD`). Raises ValueError."""
    text = text.strip()
    if text.endswith(".") and not _escaped_at(text, len(text) - 1):
        text = text[:-1]
    if not text:
        return []
    labels = _split_labels(text)
    for label in labels:
        if not label or len(label) > 63:
            raise ValueError(f"bad label {label!r} in {text!r}")
    return labels


def read_escape(text: str, i: int) -> tuple[bytes, int]:
    """Reads the presentation-format escape whose backslash is at *text[i]* (`\\DDD`, a
    byte in decimal, or `\\X`, the character X); answers its bytes and the index just past
    it. Raises ValueError."""
    digits = text[i + 1 : i + 4]
    if len(digits) == 3 and digits.isdigit():
        if int(digits) > 255:
            raise ValueError(f"bad escape \\{digits} in {text!r}")
        return bytes([int(digits)]), i + 4
    if i + 1 >= len(text):
        raise ValueError(f"a lone backslash ends {text!r}")
    return text[i + 1].encode("utf-8"), i + 2


def _escaped_at(text: str, index: int) -> bool:
    """Answers whether the character at *index* follows an odd run of backslashes."""
    run = 0
    while index - run - 1 >= 0 and text[index - run - 1] == "\\":
        run += 1
    return run % 2 == 1


def _split_labels(text: str) -> list[bytes]:
    """Splits presentation text into raw labels, reading `\\X` and `\\DDD`. Raises
    ValueError."""
    if "\\" not in text:
        return [label.encode("ascii") for label in text.split(".")]
    labels: list[bytes] = []
    label = bytearray()
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == ".":
            labels.append(bytes(label))
            label = bytearray()
        elif ch == "\\":
            raw, i = read_escape(text, i)
            label += raw
            continue
        else:
            label += ch.encode("ascii")
        i += 1
    labels.append(bytes(label))
    return labels


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
    qend = read_qname(data, 12)
    off = qend + 4
    end = len(data)
    if off > end:
        raise FormError("question runs past the end of the message")
    for _ in range(ancount + nscount):
        off = _skip_rr(data, off)
    edns = do = False
    udp_size = MIN_UDP_SIZE
    version = 0
    for _ in range(arcount):
        name_off = off
        off = skip_name(data, off)
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


def _skip_rr(data: bytes, off: int) -> int:
    off = skip_name(data, off)
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
    """Answers whether *data* is a response to our query: ID, QR and question (name
    case-insensitive, type, class) must match. Source address is checked by the socket."""
    if len(data) < 12 + len(qname) + 4:
        return False
    rid, flags, qdcount = struct.unpack_from("!HHH", data)
    if rid != ident or not flags & QR or qdcount != 1:
        return False
    end = 12 + len(qname)
    if data[12:end].lower() != qname:
        return False
    return data[end : end + 4] == struct.pack("!HH", qtype, qclass)


# what walk_records finds: [(TTL offset, TTL, counts for the entry's TTL)], the answer
# count, and the negative TTL of the first authority SOA (None without one)
Records = tuple[list[tuple[int, int, bool]], int, "int | None"]


class UpstreamReply:
    """An upstream response with its OPT removed: wire, full rcode, EDE options it carried,
    and its records as `walk_records` reads them (offsets into `wire`)."""

    __slots__ = ("ede", "rcode", "records", "wire")

    def __init__(self, wire: bytes, rcode: int, ede: tuple[tuple[int, str], ...],
                 records: Records | None = None) -> None:
        self.wire = wire
        self.rcode = rcode
        self.ede = ede
        self.records = records


def walk_records(data: bytes, question_end: int = 0,
                 ) -> tuple[Records, tuple[int, int, int, int] | None, int]:
    """Walks every record of a message once: answers its Records (OPT left out), where its
    OPT record (in the additional section) is, as (start, end, TTL, RDATA start), or None,
    and where its last record
    ends (bytes after it are not part of the message). *question_end*, when known (a
    reply whose one question was checked already), saves reading the question.

    Raises:
        FormError: the message is malformed (more than one OPT record, too).
        struct.error: the header is short.
    """
    _ident, _flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    off = question_end
    if not off:
        off = 12
        for _ in range(qdcount):
            off = skip_name(data, off) + 4
    records: list[tuple[int, int, bool]] = []
    negative: int | None = None
    opt: tuple[int, int, int, int] | None = None
    end = len(data)
    counted = ancount + nscount
    unpack = RR_FIXED.unpack_from
    for i in range(counted + arcount):
        start = off
        if off < end and data[off] >= 0xC0:  # the usual owner: a compression pointer
            off += 2
        else:
            off = skip_name(data, off)
        if off + 10 > end:
            raise FormError("record runs past the end of the message")
        rtype, _rclass, ttl, rdlen = unpack(data, off)
        rdata = off + 10
        off = rdata + rdlen
        if off > end:
            raise FormError("record data runs past the end of the message")
        if rtype == TYPE_OPT and i >= counted:  # elsewhere it is just a (strange) record
            if opt is not None:
                raise FormError("more than one OPT record")
            opt = (start, off, ttl, rdata)
            continue
        if rtype == TYPE_SOA and ancount <= i < counted and negative is None:
            if rdlen < 22:
                raise FormError("SOA record too short")
            negative = min(ttl, U32.unpack_from(data, off - 4)[0])
        records.append((rdata - 6, ttl, i < counted))
    return (records, ancount, negative), opt, off


def strip_opt(data: bytes, question_end: int = 0) -> UpstreamReply:
    """Removes the OPT record from a response; folds its extended rcode into the rcode and
    keeps its Extended DNS Error options. Raises FormError if the message is malformed.
    *question_end*: see walk_records."""
    try:
        (records, ancount, negative), opt, stop = walk_records(data, question_end)
    except struct.error:
        raise FormError("message shorter than its header") from None
    if stop < len(data):  # bytes after the last record are no part of it
        data = data[:stop]
    rcode = data[3] & 0xF
    if opt is None:
        return UpstreamReply(data, rcode, (), (records, ancount, negative))
    start, end, ttl, rdata = opt
    rcode |= ((ttl >> 24) & 0xFF) << 4
    ede = tuple(_read_ede(data, rdata, end)) if end > rdata else ()
    arcount = U16.unpack_from(data, 10)[0] - 1
    wire = data[:10] + U16.pack(arcount) + data[12:start] + data[end:]
    if end < stop:  # records after the OPT moved up
        gone = end - start
        records = [(o - gone if o > start else o, t, c) for o, t, c in records]
    return UpstreamReply(wire, rcode, ede, (records, ancount, negative))


def _read_ede(data: bytes, off: int, end: int) -> list[tuple[int, str]]:
    out = []
    while off + 4 <= end:
        code, length = struct.unpack_from("!HH", data, off)
        off += 4
        if code == OPTION_EDE and length >= 2 and off + length <= end:
            info = U16.unpack_from(data, off)[0]
            out.append((info, data[off + 2 : off + length].decode("utf-8", "replace")))
        off += length
    return out


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

    Patches the client's ID, RD bit and question bytes (the client's letter case), clears AD
    unless the client asked for it (DO or AD), adds our OPT when the client sent EDNS, and
    truncates to *udp_size* (0 for TCP: the 65,535 bytes a length prefix can carry) with TC
    set and the question kept.
    """
    flags = U16.unpack_from(reply_wire, 2)[0]
    flags = (flags & ~(RD | 0xF)) | (q_flags & RD) | (rcode & 0xF) | QR | RA
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
