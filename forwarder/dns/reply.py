"""Reading a reply: validated in full, its OPT record taken out, and indexed once.

`read` walks a response once. It checks the header counts against the data, every name
(`names.walk`: the rules dnspython applies), every record's RDATA by its type
(`rdata.check`), that the only OPT record is the additional section's and owned by the
root, that no TSIG record comes back, and that nothing follows the last record. What
fails is a FormError: the upstream group counts the reply as malformed and asks the next
server. What passes parses with strict parsers (dnspython, the forwarder's test client).
The result is an `index.Index`, which every later step reads instead of the wire.
"""

from __future__ import annotations

import struct

from forwarder.dns import names, rdata, recordstrip
from forwarder.dns.index import (
    OPTION_EDE,
    R_END,
    R_RDATA,
    R_START,
    R_TTL,
    SECTION_ADDITIONAL,
    SECTION_ANSWER,
    SECTION_AUTHORITY,
    TYPE_A,
    TYPE_AAAA,
    TYPE_CNAME,
    TYPE_DNAME,
    TYPE_HTTPS,
    TYPE_OPT,
    TYPE_SOA,
    TYPE_SVCB,
    TYPE_TSIG,
    Index,
    Record,
)
from forwarder.errors import FormError

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_CARRIERS = frozenset((TYPE_CNAME, TYPE_DNAME, TYPE_SVCB, TYPE_HTTPS))  # names or hints


# --- reading --------------------------------------------------------------------------------


def read(data: bytes, qend: int = 0) -> Index:
    """Reads and checks a whole response (see the module docstring). *qend*, when the
    caller checked the question already (one question, an uncompressed name ending at
    qend - 4), saves reading it again.

    Raises:
        FormError: the message is malformed.
    """
    try:
        _id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    except struct.error:
        raise FormError("message shorter than its header") from None
    memo: names.NameMemo = {}
    n = len(data)
    if qend:
        memo[12] = (qend - 4, qend - 16, 0)
        off = qend
    else:
        off = 12
        for _ in range(qdcount):
            off = names.walk(data, off, n, memo) + 4
        if off > n:
            raise FormError("question runs past the end of the message")
        qend = off
    question_end = memo.get(12, (0,))[0] if qdcount else 0
    records: list[Record] = []
    negative: int | None = None
    opt: Record | None = None
    plain = qdcount == 1
    counted = ancount + nscount
    unpack = _RR.unpack_from
    check = rdata.check
    try:
        for i in range(counted + arcount):
            start = off
            first = data[off]
            if first >= 0xC0:  # the usual owner: a pointer to a name checked already
                target = (first & 0x3F) << 8 | data[off + 1]
                known = memo.get(target)
                if known is not None and target < off and known[0] <= off \
                        and known[2] < names.MAX_POINTER_HOPS:
                    off += 2
                else:
                    off = names.walk(data, off, n, memo)
                question_owned = target == 12 and question_end != 0
            elif first == 0:  # the root (an OPT record's owner)
                off += 1
                question_owned = False
            else:
                off = names.walk(data, off, n, memo)
                question_owned = False
            rtype, rclass, ttl, rdlen = unpack(data, off)
            rd = off + 10
            end = rd + rdlen
            if end > n:
                raise FormError(f"record at offset {start} runs past the end of the message")
            section = (SECTION_ANSWER if i < ancount else SECTION_AUTHORITY if i < counted
                       else SECTION_ADDITIONAL)
            if rtype == TYPE_A and rclass == 1:
                if rdlen != 4:
                    raise FormError(f"A record of {rdlen} octets at offset {start}")
            elif rtype == TYPE_AAAA and rclass == 1:
                if rdlen != 16:
                    raise FormError(f"AAAA record of {rdlen} octets at offset {start}")
            elif rtype == TYPE_CNAME:
                if names.walk(data, rd, end, memo) != end:
                    raise FormError(f"CNAME record at offset {start} has bytes after its name")
            elif rtype == TYPE_OPT:
                if section != SECTION_ADDITIONAL or opt is not None or data[start] != 0:
                    raise FormError("an OPT record other than one owned by the root in the "
                                    "additional section")
                if rdlen:  # options (none: nothing to check)
                    check(data, rd, end, rtype, rclass, _walker(data, memo))
                opt = (start, rtype, rclass, off + 4, ttl, rd, end, section)
                off = end
                continue
            elif rtype == TYPE_TSIG:
                raise FormError("a TSIG record in a reply to an unsigned query")
            else:
                check(data, rd, end, rtype, rclass, _walker(data, memo))
                if rtype == TYPE_SOA and section == SECTION_AUTHORITY and negative is None:
                    negative = min(ttl, _U32.unpack_from(data, end - 4)[0])
            if plain:
                if section == SECTION_ANSWER:
                    plain = question_owned and rtype not in _CARRIERS
                elif section == SECTION_ADDITIONAL:
                    plain = rtype != TYPE_A and rtype != TYPE_AAAA
            records.append((start, rtype, rclass, off + 4, ttl, rd, end, section))
            off = end
    except (IndexError, struct.error):
        raise FormError("record runs past the end of the message") from None
    if off != n:
        raise FormError(f"{n - off} bytes after the last record")
    rcode = flags & 0xF
    if opt is None:
        return Index(data, rcode, (), records, ancount, nscount, negative, qend, plain)
    return _without_opt(data, rcode, records, opt, ancount, nscount, negative, qend, plain)


def _walker(data: bytes, memo: names.NameMemo) -> rdata.CheckName:
    def check_name(off: int, limit: int, compressible: bool) -> int:
        return names.walk(data, off, limit, memo, compressible)
    return check_name


def _without_opt(data: bytes, rcode: int, records: list[Record], opt: Record, ancount: int,
                 nscount: int, negative: int | None, qend: int, plain: bool) -> Index:
    """The Index of *data* with its OPT record taken out: its extended rcode folded into
    the rcode and its Extended DNS Errors kept."""
    start, end, ttl, rd = opt[R_START], opt[R_END], opt[R_TTL], opt[R_RDATA]
    rcode |= ((ttl >> 24) & 0xFF) << 4
    ede = tuple(_read_ede(data, rd, end))
    arcount = _U16.unpack_from(data, 10)[0] - 1
    wire = data[:10] + _U16.pack(arcount) + data[12:start] + data[end:]
    if end < len(data):
        # records followed the OPT: names after it may point past it. Take the OPT out as
        # the policy strips a record (pointers moved), and read the result again.
        stripped = recordstrip.remove(Index(data, rcode, ede, sorted([*records, opt]),
                                            ancount, nscount, negative, qend, plain), [opt])
        again = read(stripped, qend)
        again.rcode, again.ede = rcode, ede
        return again
    return Index(wire, rcode, ede, records, ancount, nscount, negative, qend, plain)


def _read_ede(data: bytes, off: int, end: int) -> list[tuple[int, str]]:
    out = []
    while off + 4 <= end:
        code, length = struct.unpack_from("!HH", data, off)
        off += 4
        if code == OPTION_EDE and length >= 2 and off + length <= end:
            info = _U16.unpack_from(data, off)[0]
            out.append((info, data[off + 2 : off + length].decode("utf-8", "replace")))
        off += length
    return out
