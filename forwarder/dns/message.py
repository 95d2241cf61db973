"""The only dnslib adaptor: read an internal reply into records, and build synthesised answers.

A `Record` is one resource record in a form people and hooks can read and write:
``Record(name, type, ttl, value)`` with the owner name in lower case without a trailing
dot, the type as text (``"A"``, ``"TYPE65534"``), and the data as text:

- A / AAAA: the address (``10.0.0.1``, ``2001:db8::1``);
- CNAME / NS / PTR / DNAME: the target name, lower case, no trailing dot;
- TXT: zone-file strings (``"v=spf1 -all" "second string"``) when reading; when writing,
  text that does not start with a double quote is one string (split every 255 bytes);
- any type as RFC 3597 generic data (``\\# 4 0a000001``), and everything else in zone-file
  form as dig prints it (``10 mail.example.com.`` for MX).

Reading and writing round-trip: records read from an answer can be written back unchanged.
Nothing here is on the cache-hit path; the fast paths use `forwarder.dns.wire`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, NamedTuple

import dnslib

from forwarder.dns import names, wire

MAX_TTL = 2**31 - 1
MAX_ANSWER = wire.MAX_MESSAGE - len(wire.opt_record(0, False, None))  # room for our OPT
_NAME_TYPES = {5: dnslib.CNAME, 2: dnslib.NS, 12: dnslib.PTR, 39: dnslib.DNAME}


class Record(NamedTuple):
    """One resource record: owner name, type, TTL in seconds, and data as text."""

    name: str
    type: str
    ttl: int
    value: str


class Sections(NamedTuple):
    answer: tuple[Record, ...]
    authority: tuple[Record, ...]
    additional: tuple[Record, ...]


# --- rcodes and types ----------------------------------------------------------------------


def rcode_to_text(rcode: int) -> str:
    return wire.RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


def rcode_from(value: object) -> int:
    """Answers the numeric rcode for ``"NXDOMAIN"``, ``"RCODE9"`` or 0..4095. Raises
    ValueError or TypeError."""
    if isinstance(value, str):
        text = value.strip().upper()
        if text in wire.RCODES:
            return wire.RCODES[text]
        if text.startswith("RCODE") and text[5:].isdigit():
            value = int(text[5:])
        else:
            raise ValueError(f"unknown rcode {value!r}; expected e.g. NOERROR, NXDOMAIN, REFUSED")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"rcode must be text such as 'NXDOMAIN' or a number, not {value!r}")
    if not 0 <= value <= 4095:
        raise ValueError(f"rcode {value} is outside 0..4095")
    return value


def _type_code(rtype: object) -> int:
    if isinstance(rtype, str):
        text = rtype.strip().upper()
        code = dnslib.QTYPE.reverse.get(text)
        return code if isinstance(code, int) else wire.qtype_from_text(text)
    if isinstance(rtype, int) and not isinstance(rtype, bool) and 0 < rtype < 65536:
        return rtype
    raise TypeError(f"record type must be text such as 'A' or a number, not {rtype!r}")


def type_to_text(rtype: int) -> str:
    name = dnslib.QTYPE.forward.get(rtype)
    return name if isinstance(name, str) else f"TYPE{rtype}"


# --- records -> wire ------------------------------------------------------------------------


def to_record(item: object) -> Record:
    """Checks a record given as a Record or a (name, type, ttl, value) tuple and answers
    it as a Record with the type in canonical text. Raises ValueError or TypeError."""
    if not isinstance(item, tuple | list) or len(item) != 4:
        raise TypeError(f"a record is Record(name, type, ttl, value) or a 4-tuple, not {item!r}")
    name, rtype, ttl, value = item
    if not isinstance(name, str):
        raise TypeError(f"record name must be text, not {name!r}")
    try:
        names.from_text(name)
    except (ValueError, UnicodeError) as e:
        raise ValueError(f"bad record name {name!r}: {e}") from None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise ValueError(f"record TTL must be a whole number 0..{MAX_TTL}, not {ttl!r}")
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"record value must be text, not {value!r}")
    return Record(name, type_to_text(_type_code(rtype)), ttl, value)


def to_rr(record: Record) -> dnslib.RR:
    """Builds the dnslib record for a checked Record. Raises ValueError on bad data."""
    name, type_text, ttl, value = record
    rtype = _type_code(type_text)
    value = value.strip()
    try:
        rdata = _rdata(rtype, type_text, value)
    except (ValueError, TypeError, IndexError, dnslib.DNSError) as e:
        raise ValueError(f"bad {type_text} value {value!r} for {name}: {e}") from None
    return dnslib.RR(_label(name), rtype, ttl=ttl, rdata=rdata)


def _label(text: str) -> dnslib.DNSLabel:
    """The dnslib name for presentation *text*, escapes read as `names.to_text` writes
    them. Raises ValueError."""
    return dnslib.DNSLabel(names.text_to_labels(text))


def _rdata(rtype: int, type_text: str, value: str) -> Any:
    if value.startswith("\\#"):
        parts = value[2:].split()
        if not parts or not parts[0].isdigit():
            raise ValueError("generic data is '\\# LENGTH HEX'")
        data = bytes.fromhex("".join(parts[1:]))
        if len(data) != int(parts[0]):
            raise ValueError(f"generic data has {len(data)} bytes, not {parts[0]}")
        return dnslib.RD(data)
    if rtype == 1:
        return dnslib.A(str(ipaddress.IPv4Address(value)))
    if rtype == 28:
        return dnslib.AAAA(ipaddress.IPv6Address(value).compressed)
    if rtype in _NAME_TYPES:
        names.from_text(value)  # checks it
        return _NAME_TYPES[rtype](_label(value))
    if rtype == wire.TYPE_TXT:
        if value.startswith('"'):
            return dnslib.TXT(_parse_strings(value))
        raw = value.encode("utf-8")
        return dnslib.TXT([raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""])
    parsed = dnslib.RR.fromZone(f". 0 IN {type_text} {value}")
    if len(parsed) != 1 or parsed[0].rtype != rtype:
        raise ValueError("not one record of that type")
    return parsed[0].rdata


def _as_rr(rec: Record | dnslib.RR) -> dnslib.RR:
    return rec if isinstance(rec, dnslib.RR) else to_rr(rec)


def build_answer(
    q: Any,
    records: Iterable[Record | dnslib.RR],
    rcode: int = 0,
    authority: Iterable[Record | dnslib.RR] = (),
    additional: Iterable[Record | dnslib.RR] = (),
    aa: bool = False,
) -> bytes:
    """Builds an internal reply (no OPT, ID 0) to the query *q* with the given records.

    Records are `Record`s (checked with `to_record` first) or dnslib records from `to_rr`.
    The question section is the client's own bytes (`q.question`), so its letter case is
    kept and `wire.finish` can patch the reply as it patches any other.
    Raises ValueError when a record's data is invalid, or when the answer would not fit in
    a DNS message with our OPT record.
    """
    flags = wire.QR | wire.RA | (q.flags & (wire.RD | wire.CD)) | (wire.AA if aa else 0)
    msg = dnslib.DNSRecord(dnslib.DNSHeader(id=0, bitmap=flags | (rcode & 0xF)))
    msg.add_question(dnslib.DNSQuestion.parse(dnslib.DNSBuffer(q.question)))
    for rec in records:
        msg.add_answer(_as_rr(rec))
    for rec in authority:
        msg.add_auth(_as_rr(rec))
    for rec in additional:
        msg.add_ar(_as_rr(rec))
    try:
        packed = msg.pack()
    except dnslib.DNSError as e:
        raise ValueError(f"cannot build the answer: {e}") from None
    if len(packed) > MAX_ANSWER:
        raise ValueError(f"the answer is {len(packed):,} bytes, more than a DNS message "
                         f"can carry ({MAX_ANSWER:,} with our OPT record)")
    end = 12 + len(q.question)
    if packed[12:end].lower() != q.question.lower():  # pointers below assume this layout
        raise ValueError("the question did not pack as it was received")
    return bytes(packed[:12]) + q.question + bytes(packed[end:])  # dnslib packs bytearrays


# --- wire -> records ------------------------------------------------------------------------


def parse_sections(data: bytes) -> Sections:
    """Reads every record of an internal reply (OPT skipped). Raises ValueError."""
    try:
        msg = dnslib.DNSRecord.parse(data)
    except (dnslib.DNSError, ValueError, IndexError, UnicodeError) as e:
        raise ValueError(f"cannot parse the reply: {e}") from None
    return Sections(_records(msg.rr), _records(msg.auth), _records(msg.ar))


def _records(rrs: list[dnslib.RR]) -> tuple[Record, ...]:
    return tuple(
        Record(_name_text(rr.rname), type_to_text(rr.rtype), rr.ttl, _value_text(rr))
        for rr in rrs if rr.rtype != wire.TYPE_OPT
    )


def _name_text(label: dnslib.DNSLabel) -> str:
    return names.labels_to_text(part.lower() for part in label.label)


def _value_text(rr: dnslib.RR) -> str:
    rdata = rr.rdata
    if type(rdata) is dnslib.RD:  # a type dnslib does not know
        raw = bytes(rdata.data)
        return f"\\# {len(raw)} {raw.hex()}" if raw else "\\# 0"
    if rr.rtype in _NAME_TYPES:
        return _name_text(rdata.label)
    if rr.rtype == wire.TYPE_TXT:
        return " ".join(_quote(s) for s in rdata.data)
    return str(rdata.toZone())


def _quote(raw: bytes) -> str:
    out = ['"']
    for byte in raw:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def _parse_strings(text: str) -> list[bytes]:
    """Reads zone-file character strings: ``"a b" "c\\"d" "\\255"``."""
    strings: list[bytes] = []
    i, end = 0, len(text)
    while i < end:
        if text[i].isspace():
            i += 1
            continue
        if text[i] != '"':
            raise ValueError("TXT strings must each be in double quotes")
        i += 1
        buf = bytearray()
        while True:
            if i >= end:
                raise ValueError("unterminated TXT string")
            ch = text[i]
            if ch == '"':
                i += 1
                break
            if ch == "\\":
                escaped, i = names.read_escape(text, i)
                buf += escaped
                continue
            buf += ch.encode("utf-8")
            i += 1
        if len(buf) > 255:
            raise ValueError("a TXT string is longer than 255 bytes")
        strings.append(bytes(buf))
    if not strings:
        raise ValueError("no TXT strings")
    return strings
