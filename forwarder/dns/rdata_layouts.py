"""The building blocks of the RDATA rules in forwarder.dns.rdata, and the longer rules.

Field layouts (a tuple of fixed sizes and field kinds turned into one rule), the shared
field readers (character-strings, NSEC type bitmaps, gateways, digests with a length set
by their type) and the rules for types with inner structure: SVCB/HTTPS SvcParams, EDNS
options, APL, LOC, GPOS, CAA, HIP, TSIG, IPSECKEY, AMTRELAY, ZONEMD. Each mirrors what
dnspython 2.9's from_wire_parser and constructor reject for that type, nothing more.

A rule is called as rule(data, off, end, check_name): data[off:end] is the RDATA; it
raises FormError with a short reason (forwarder.dns.rdata adds the type's name).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from forwarder.errors import FormError

CheckName = Callable[[int, int, bool], int]
Rule = Callable[[bytes, int, int, CheckName], None]

# field kinds in a layout; a positive number is a fixed-size field of that many octets
NAME_C = -1  # a domain name that may be compressed
NAME = -2  # a domain name that must not be compressed
STRING = -3  # a character-string: one length octet, then that many octets
BLOB16 = -4  # two length octets, then that many octets
REST = -5  # any octets up to the end (even none)


def layout(*fields: int) -> Rule:
    """Answers the rule for RDATA made of *fields* in order, with nothing left over."""

    def rule(data: bytes, off: int, end: int, check_name: CheckName) -> None:
        for field in fields:
            if field > 0:
                off += field
                if off > end:
                    raise FormError("truncated")
            elif field == REST:
                return
            elif field == STRING:
                off = string(data, off, end)
            elif field == BLOB16:
                if off + 2 > end:
                    raise FormError("truncated")
                off += 2 + (data[off] << 8 | data[off + 1])
                if off > end:
                    raise FormError("field runs past the end")
            elif off >= end:
                raise FormError("truncated before a name")
            else:
                off = check_name(off, end, field == NAME_C)
        if off != end:
            raise FormError("trailing bytes")

    return rule


def exact(size: int) -> Rule:
    """Answers the rule for RDATA of exactly *size* octets."""

    def rule(data: bytes, off: int, end: int, check_name: CheckName) -> None:
        if end - off != size:
            raise FormError(f"{end - off} octets, not {size}")

    return rule


def string(data: bytes, off: int, end: int) -> int:
    """Answers the offset after the character-string at *off*."""
    if off >= end:
        raise FormError("missing character-string")
    off += data[off] + 1
    if off > end:
        raise FormError("character-string runs past the end")
    return off


def strings(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """TXT and its kin: one or more character-strings filling the RDATA."""
    if off >= end:
        raise FormError("no character-string")
    while off < end:
        off += data[off] + 1
    if off != end:
        raise FormError("character-string runs past the end")


def bitmap(data: bytes, off: int, end: int) -> None:
    """NSEC/NSEC3/CSYNC type bitmap (RFC 4034 4.1.2): windows ascending, 1-32 octets
    each, the last octet of each non-zero."""
    last = -1
    while off < end:
        if off + 2 > end:
            raise FormError("truncated type bitmap")
        window, size = data[off], data[off + 1]
        if window <= last:
            raise FormError("type bitmap windows out of order")
        if size == 0 or size > 32:
            raise FormError(f"type bitmap window of {size} octets")
        off += 2 + size
        if off > end:
            raise FormError("type bitmap runs past the end")
        if data[off - 1] == 0:
            raise FormError("type bitmap window ends in a zero octet")
        last = window


def digest(header: int, at: int, lengths: dict[int, int]) -> Rule:
    """Answers the rule for *header* fixed octets then a digest whose length is fixed by
    the octet at *at* when *lengths* knows it (-1: that value is reserved)."""

    def rule(data: bytes, off: int, end: int, check_name: CheckName) -> None:
        if end - off < header:
            raise FormError("truncated")
        kind = data[off + at]
        want = lengths.get(kind)
        if want is not None and end - off - header != want:
            if want < 0:
                raise FormError(f"digest type {kind} is reserved")
            raise FormError(f"digest of {end - off - header} octets for type {kind}")

    return rule


def gateway(data: bytes, off: int, end: int, check_name: CheckName, kind: int) -> int:
    """Answers the offset after an IPSECKEY gateway / AMTRELAY relay of type *kind*."""
    if kind == 0:
        return off
    if kind == 1:
        off += 4
    elif kind == 2:
        off += 16
    elif kind == 3:
        if off >= end:
            raise FormError("truncated before the gateway name")
        return check_name(off, end, False)
    else:
        raise FormError(f"gateway type {kind} unknown")
    if off > end:
        raise FormError("truncated gateway address")
    return off


def _u16(data: bytes, off: int) -> int:
    return data[off] << 8 | data[off + 1]


# --- types with inner structure ----------------------------------------------------------


def tsig(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """TSIG (RFC 8945): name, time and fudge, MAC, original ID, error (an RCODE, at most
    4095 for dnspython), other data."""
    if off >= end:
        raise FormError("truncated")
    off = check_name(off, end, False) + 8
    if off + 2 > end:
        raise FormError("truncated")
    off += 2 + _u16(data, off) + 4
    if off + 2 > end:
        raise FormError("truncated")
    if _u16(data, off - 2) > 4095:
        raise FormError("error field is not an RCODE")
    if off + 2 + _u16(data, off) != end:
        raise FormError("other data does not fill the record")


def caa(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """CAA (RFC 8659): flags, a non-empty ASCII-alphanumeric tag, any value."""
    tag = off + 2
    if tag > end or tag + data[off + 1] > end:
        raise FormError("truncated")
    if not data[tag : tag + data[off + 1]].isalnum():
        raise FormError("tag empty or not alphanumeric")


def hip(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """HIP (RFC 8005): HIT and key lengths, HIT, key, then uncompressed server names."""
    if off + 4 > end:
        raise FormError("truncated")
    off += 4 + data[off] + _u16(data, off + 2)
    if off > end:
        raise FormError("HIT or key runs past the end")
    while off < end:
        off = check_name(off, end, False)


def ipseckey(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """IPSECKEY (RFC 4025): precedence, gateway type, algorithm, gateway, any key."""
    if off + 3 > end:
        raise FormError("truncated")
    gateway(data, off + 3, end, check_name, data[off + 1])


def amtrelay(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """AMTRELAY (RFC 8777): precedence, D bit and relay type, relay, nothing more."""
    if off + 2 > end:
        raise FormError("truncated")
    if gateway(data, off + 2, end, check_name, data[off + 1] & 0x7F) != end:
        raise FormError("trailing bytes")


_ZONEMD_SIZES = {1: 48, 2: 64}  # SHA-384, SHA-512


def zonemd(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """ZONEMD (RFC 8976): scheme and hash algorithm not 0, digest of at least 12 octets
    and of the hash's size for SHA-384 (1) and SHA-512 (2)."""
    size = end - off - 6
    if size < 0:
        raise FormError("truncated")
    if data[off + 4] == 0 or data[off + 5] == 0:
        raise FormError("reserved scheme or hash algorithm 0")
    if size < 12 or size != _ZONEMD_SIZES.get(data[off + 5], size):
        raise FormError(f"digest of {size} octets")


def apl(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """APL (RFC 3123): items of family, prefix, N bit and length, address without trailing
    zero octets; IPv4 up to 4 octets and /32, IPv6 up to 16 and /128."""
    while off < end:
        if off + 4 > end:
            raise FormError("truncated item")
        family, prefix, size = _u16(data, off), data[off + 2], data[off + 3] & 0x7F
        off += 4 + size
        if off > end:
            raise FormError("address runs past the end")
        if size and data[off - 1] == 0:
            raise FormError("address has a trailing zero octet")
        if (family == 1 and (size > 4 or prefix > 32)) or (
            family == 2 and (size > 16 or prefix > 128)
        ):
            raise FormError("address or prefix too long for its family")


_LOC_LAT = 90 * 3600000
_LOC_LONG = 180 * 3600000


def loc(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """LOC (RFC 1876): version 0, size and precisions as base and exponent 0-9 (zero only
    as 0x00), latitude within 90 and longitude within 180 degrees."""
    if end - off != 16:
        raise FormError(f"{end - off} octets, not 16")
    if data[off]:
        raise FormError("version not 0")
    for b in data[off + 1 : off + 4]:
        if b & 0xF > 9 or b >> 4 > 9 or (b < 16 and b):
            raise FormError("bad size or precision")
    if abs(int.from_bytes(data[off + 4 : off + 8], "big") - 0x80000000) > _LOC_LAT:
        raise FormError("bad latitude")
    if abs(int.from_bytes(data[off + 8 : off + 12], "big") - 0x80000000) > _LOC_LONG:
        raise FormError("bad longitude")


def _decimal(text: bytes) -> float:
    """Answers the value of a GPOS coordinate: optional sign, digits, at most one point."""
    body = text[1:] if text[:1] in (b"-", b"+") else text
    if not body.isdigit():
        left, point, right = body.partition(b".")
        if (
            not point
            or not (left or right)
            or (left and not left.isdigit())
            or (right and not right.isdigit())
        ):
            raise FormError("coordinate is not a decimal number")
    return float(text)


def gpos(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """GPOS (RFC 1712): three decimal strings; latitude within 90, longitude within 180."""
    values = []
    for _ in range(3):
        nxt = string(data, off, end)
        values.append(_decimal(data[off + 1 : nxt]))
        off = nxt
    if off != end:
        raise FormError("trailing bytes")
    if not (-90.0 <= values[0] <= 90.0 and -180.0 <= values[1] <= 180.0):
        raise FormError("coordinate out of range")


# --- SVCB and HTTPS (RFC 9460) -----------------------------------------------------------


def _svc_strings(data: bytes, off: int, end: int) -> None:
    """alpn and docpath values: non-empty character-strings filling the value."""
    while off < end:
        if data[off] == 0:
            raise FormError("empty string in a SvcParam list")
        off += data[off] + 1
    if off != end:
        raise FormError("SvcParam string runs past its value")


def _svc_mandatory(data: bytes, off: int, end: int) -> set[int]:
    """Answers the keys of a mandatory value: ascending, not 0 (mandatory itself)."""
    if (end - off) % 2 or off == end:
        raise FormError("empty or odd-length mandatory list")
    keys = [data[i] << 8 | data[i + 1] for i in range(off, end, 2)]
    if keys[0] == 0 or any(a >= b for a, b in pairwise(keys)):
        raise FormError("mandatory keys not ascending, or mandatory listed")
    return set(keys)


def svcb(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """SVCB and HTTPS: priority, uncompressed target, then (not in AliasMode) SvcParams
    with keys ascending, values as each key defines (mandatory, alpn, port, ipv4hint,
    ech, ipv6hint never empty), mandatory keys present, no-default-alpn after alpn."""
    if off + 3 > end:
        raise FormError("truncated")
    alias = not (data[off] or data[off + 1])
    off = check_name(off + 2, end, False)
    if off == end:
        return
    if alias:
        raise FormError("parameters in AliasMode")
    prior = -1
    missing: set[int] | None = None  # mandatory keys not seen yet
    while off < end:
        if off + 4 > end:
            raise FormError("truncated SvcParam")
        key = data[off] << 8 | data[off + 1]
        start = off + 4
        off = start + (data[off + 2] << 8 | data[off + 3])
        if key <= prior or off > end:
            raise FormError("SvcParam keys not ascending, or a value past the end")
        size = off - start
        if key == 1 or key == 10:  # alpn (never empty), docpath
            if not size and key == 1:
                raise FormError("empty alpn")
            _svc_strings(data, start, off)
        elif key == 4 or key == 6:  # ipv4hint, ipv6hint
            if not size or size % (4 if key == 4 else 16):
                raise FormError("address hint empty or of a partial address")
        elif key == 5:  # ech: an ECHConfigList, its own length then at least 4 octets
            if size < 6 or data[start] << 8 | data[start + 1] != size - 2:
                raise FormError("ech is not an ECHConfigList")
        elif key == 3:
            if size != 2:
                raise FormError("port is not 2 octets")
        elif key == 0:
            missing = _svc_mandatory(data, start, off)
        elif key == 2:  # no-default-alpn: empty, and alpn (key 1) just before it
            if size or prior != 1:
                raise FormError("no-default-alpn with a value or without alpn")
        elif key == 8 and size:  # ohttp
            raise FormError("ohttp has a value")
        if missing:
            missing.discard(key)
        prior = key
    if missing:
        raise FormError("a mandatory key is missing")


# --- OPT (RFC 6891): the options dnspython parses ------------------------------------------


def _ecs(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if end - off < 4:
        raise FormError("truncated ECS")
    family, source, scope = _u16(data, off), data[off + 2], data[off + 3]
    bits = 32 if family == 1 else 128 if family == 2 else 0
    if not bits or source > bits or scope > bits:
        raise FormError("ECS family or prefix length")
    if end - off - 4 != (source + 7) // 8:
        raise FormError("ECS address length differs from its prefix")
    if source % 8 and data[end - 1] & (0xFF >> source % 8):
        raise FormError("ECS address bits beyond the prefix")


def _ede(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if end - off < 2:
        raise FormError("truncated EDE")
    _text(data[off + 2 : end])  # a NUL that dnspython strips from the end is valid UTF-8


def _cookie(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if not (end - off == 8 or 16 <= end - off <= 40):
        raise FormError("COOKIE length")


def _report_channel(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off >= end or check_name(off, end, False) != end:
        raise FormError("report-channel is not one name")


def _text(text: bytes) -> None:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("option text is not UTF-8") from None


def _utf8(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    _text(data[off:end])


_OPTIONS: dict[int, Rule] = {
    8: _ecs,
    10: _cookie,
    15: _ede,
    18: _report_channel,
    22: _utf8,  # EDE-EXTRA-TEXT-LANGUAGE
    23: _utf8,  # FILTERING-CONTACT
    24: _utf8,  # FILTERING-ORGANIZATION
    25: _utf8,  # FILTERING-DB
}


def opt(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    """OPT: options of code, length and value, filling the RDATA; the values of ECS,
    COOKIE, EDE, Report-Channel and the text options as dnspython reads them."""
    while off < end:
        if off + 4 > end:
            raise FormError("truncated option")
        oend = off + 4 + _u16(data, off + 2)
        if oend > end:
            raise FormError("option runs past the end")
        rule = _OPTIONS.get(_u16(data, off))
        if rule is not None:
            rule(data, off + 4, oend, check_name)
        off = oend
