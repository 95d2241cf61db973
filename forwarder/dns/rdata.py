"""RDATA checking: is one record's RDATA exactly what dnspython 2.9 would accept?

This module owns the per-type part of reading an upstream reply: `check` is called once
per record by the reply reader and raises FormError unless the record's RDATA is what
dnspython 2.9's `from_wire` accepts for that type and class, consuming all of it. It
covers every type dnspython parses (dns/rdtypes/ANY, IN and CH/A): fixed sizes,
character-strings, which names may be compressed, digest lengths, SvcParams, EDNS
options, type bitmaps. Types dnspython does not know, and those it keeps as opaque
octets, pass. Names are checked by the reader's `check_name`, which sees the whole
message. As in dnspython, class IN types (A, AAAA, SRV, SVCB, ...) are opaque in other
classes and class CH has its own A. The longer rules live in `rdata_layouts`.
"""

from __future__ import annotations

from forwarder.dns import rdata_layouts as lay
from forwarder.dns.rdata_layouts import BLOB16, NAME, NAME_C, REST, STRING, Rule, layout
from forwarder.errors import FormError

CheckName = lay.CheckName  # Callable[[int, int, bool], int]
# check_name(off, limit, compressible): validates the (possibly compressed) domain name that
# starts at `off` and whose in-place bytes must end at or before `limit` (the RDATA end);
# compression pointers are allowed only when `compressible` is True; answers the offset just
# after the name's in-place bytes; raises FormError. The reader supplies it.

CLASS_IN, CLASS_CH = 1, 3


def check(data: bytes, rd: int, end: int, rtype: int, rclass: int, check_name: CheckName) -> None:
    """Raises forwarder.errors.FormError (with a short reason naming the type) unless
    data[rd:end], the RDATA of a record of type `rtype` and class `rclass`, is exactly what
    dnspython 2.9's from_wire would accept for that type and class, consuming all of it."""
    rule = _BY_CLASS.get(rclass, _ANY).get(rtype)
    if rule is None:
        return
    try:
        rule(data, rd, end, check_name)
    except FormError as e:
        raise FormError(f"{_NAMES[rtype]} record data: {e}", e.kind) from None


# --- rules for the common types and the short ones ----------------------------------------


def _name_c(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off >= end or check_name(off, end, True) != end:
        raise FormError("not exactly one name")


def _name(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off >= end or check_name(off, end, False) != end:
        raise FormError("not exactly one name")


def _pref_name_c(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off + 2 >= end or check_name(off + 2, end, True) != end:
        raise FormError("not a preference and one name")


def _pref_name(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off + 2 >= end or check_name(off + 2, end, False) != end:
        raise FormError("not a preference and one name")


def _soa(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off >= end:
        raise FormError("empty")
    off = check_name(off, end, True)
    if off >= end or check_name(off, end, True) + 20 != end:
        raise FormError("not two names and 20 octets")


def _rrsig(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off + 18 >= end:
        raise FormError("truncated")
    check_name(off + 18, end, False)


def _sig(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off + 18 >= end:
        raise FormError("truncated")
    check_name(off + 18, end, True)


def _nsec(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off >= end:
        raise FormError("empty")
    lay.bitmap(data, check_name(off, end, False), end)


def _nsec3(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    off = lay.string(data, off + 4, end)  # algorithm, flags, iterations, salt
    if off >= end or data[off] == 0:
        raise FormError("empty next hashed owner name")
    lay.bitmap(data, lay.string(data, off, end), end)


def _csync(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if off + 6 > end:
        raise FormError("truncated")
    lay.bitmap(data, off + 6, end)


def _isdn(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    off = lay.string(data, off, end)
    if off < end and lay.string(data, off, end) != end:
        raise FormError("trailing bytes")


def _wks(data: bytes, off: int, end: int, check_name: CheckName) -> None:
    if not 5 <= end - off <= 5 + 8192:
        raise FormError("not an address, a protocol and at most 8192 bitmap octets")


_DS_DIGESTS = {0: -1, 1: 20, 2: 32, 3: 32, 4: 48}  # SHA-1, SHA-256, GOST, SHA-384
_DS = lay.digest(4, 3, _DS_DIGESTS)
_TLSA = lay.digest(3, 2, {1: 32, 2: 64})  # SHA-256, SHA-512

# mnemonic: (type, rule); a rule of None means dnspython keeps any octets
ANY_CLASS: dict[str, tuple[int, Rule | None]] = {
    "NS": (2, _name_c),
    "CNAME": (5, _name_c),
    "SOA": (6, _soa),
    "PTR": (12, _name_c),
    "HINFO": (13, layout(STRING, STRING)),
    "MX": (15, _pref_name_c),
    "TXT": (16, lay.strings),
    "RP": (17, layout(NAME_C, NAME_C)),
    "AFSDB": (18, _pref_name_c),
    "X25": (19, layout(STRING)),
    "ISDN": (20, _isdn),
    "RT": (21, _pref_name_c),
    "SIG": (24, _sig),
    "KEY": (25, layout(4, REST)),
    "GPOS": (27, lay.gpos),
    "LOC": (29, lay.loc),
    "CERT": (37, layout(5, REST)),
    "DNAME": (39, _name),
    "OPT": (41, lay.opt),
    "DS": (43, _DS),
    "SSHFP": (44, lay.digest(2, 1, {1: 20, 2: 32})),  # SHA-1, SHA-256
    "RRSIG": (46, _rrsig),
    "NSEC": (47, _nsec),
    "DNSKEY": (48, layout(4, REST)),
    "NSEC3": (50, _nsec3),
    "NSEC3PARAM": (51, layout(4, STRING)),
    "TLSA": (52, _TLSA),
    "SMIMEA": (53, _TLSA),
    "HIP": (55, lay.hip),
    "NINFO": (56, lay.strings),
    "CDS": (59, lay.digest(4, 3, {**_DS_DIGESTS, 0: 1})),  # 0: delete (RFC 8078)
    "CDNSKEY": (60, layout(4, REST)),
    "OPENPGPKEY": (61, None),
    "CSYNC": (62, _csync),
    "ZONEMD": (63, lay.zonemd),
    "DSYNC": (66, layout(5, NAME)),
    "HHIT": (67, None),
    "BRID": (68, None),
    "SPF": (99, lay.strings),
    "NID": (104, lay.exact(10)),
    "L32": (105, lay.exact(6)),
    "L64": (106, lay.exact(10)),
    "LP": (107, _pref_name),
    "EUI48": (108, lay.exact(6)),
    "EUI64": (109, lay.exact(8)),
    "TKEY": (249, layout(NAME, 12, BLOB16, BLOB16)),
    "TSIG": (250, lay.tsig),
    "URI": (256, layout(5, REST)),  # the target is not empty
    "CAA": (257, lay.caa),
    "AVC": (258, lay.strings),
    "AMTRELAY": (260, lay.amtrelay),
    "RESINFO": (261, lay.strings),
    "WALLET": (262, lay.strings),
    "DLV": (32769, _DS),
}
IN_CLASS: dict[str, tuple[int, Rule | None]] = {
    "A": (1, lay.exact(4)),
    "WKS": (11, _wks),
    "NSAP": (22, None),
    "NSAP-PTR": (23, _name),
    "PX": (26, layout(2, NAME_C, NAME_C)),
    "AAAA": (28, lay.exact(16)),
    "SRV": (33, layout(6, NAME_C)),
    "NAPTR": (35, layout(4, STRING, STRING, STRING, NAME_C)),
    "KX": (36, _pref_name),
    "APL": (42, lay.apl),
    "IPSECKEY": (45, lay.ipseckey),
    "DHCID": (49, None),
    "SVCB": (64, lay.svcb),
    "HTTPS": (65, lay.svcb),
}
CH_CLASS: dict[str, tuple[int, Rule | None]] = {
    "A": (1, layout(NAME, 2)),  # Chaosnet: domain, then a 16-bit address
}


def _rules(*tables: dict[str, tuple[int, Rule | None]]) -> dict[int, Rule]:
    return {t: r for table in tables for t, r in table.values() if r is not None}


_ANY = _rules(ANY_CLASS)
_BY_CLASS = {CLASS_IN: _rules(ANY_CLASS, IN_CLASS), CLASS_CH: _rules(ANY_CLASS, CH_CLASS)}
_NAMES = {t: n for table in (ANY_CLASS, IN_CLASS, CH_CLASS) for n, (t, _) in table.items()}
