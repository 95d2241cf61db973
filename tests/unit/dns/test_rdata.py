"""RDATA checks against dnspython 2.9, the client every reply the forwarder sends must
satisfy: valid records of every type pass, and for edited, truncated, extended and random
RDATA `check` raises exactly when dnspython cannot parse a message holding the record.
Never accepting what dnspython rejects keeps unparseable replies from clients; never
rejecting what it accepts keeps good answers flowing.

RDATA_FUZZ_EXAMPLES sets how many examples each property test draws (default 300; the slow
test draws 6 times as many): RDATA_FUZZ_EXAMPLES=20000 for a long run."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.OPT
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.wire
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forwarder.dns import rdata
from forwarder.errors import FormError

IN, CH, HS = 1, 3, 4


# --- a faithful name checker: dns/name.py from_wire_parser and Name's 255-octet rule ---------


def name_checker(data: bytes) -> rdata.CheckName:
    """Answers a check_name over the message *data*, mirroring dnspython: labels up to 63,
    names up to 255 octets, pointers only where allowed, each pointing before the last, at
    most 16 of them, and the target ending before the part of the name that points to it."""

    def check_name(off: int, limit: int, compressible: bool) -> int:
        biggest = start = off
        end = limit
        total, hops, after = 1, 0, -1
        while True:
            if off >= end:
                raise FormError("name runs past its end")
            n = data[off]
            if n == 0:
                off += 1
                break
            if n < 64:
                total += n + 1
                off += n + 1
                if off > end:
                    raise FormError("label runs past its end")
            elif n >= 192:
                if not compressible:
                    raise FormError("compressed name where compression is forbidden")
                if off + 2 > end:
                    raise FormError("truncated pointer")
                target = (n & 0x3F) << 8 | data[off + 1]
                if after < 0:
                    after = off + 2
                if target >= biggest:
                    raise FormError("pointer not backwards")
                hops += 1
                if hops > 16:
                    raise FormError("pointer chain too long")
                biggest, end, off, start = target, start, target, target
            else:
                raise FormError("bad label type")
        if total > 255:
            raise FormError("name longer than 255 octets")
        return off if after < 0 else after

    return check_name


# --- valid examples, as dnspython writes them from zone text --------------------------------

H64 = "ab" * 32
KEY = (
    "AwEAAaz/tAm8yTn4Mfeh5eyI96WSVexTBAvkMgJzkKTOiW1vkIbzxeF3+/4RgWOq7HrxRixHlFlExOLAJr5e"
    "mLvN7SWXgnLh4+B5xQlNVz8Og8kvArMtNROxVQuCaSnIDdD5LKyWbRd2n9WGe2R8PzgCmr3EgVLrjyBxWezF"
)
NSEC3_NEXT = "2T7B4G4VSA5SMI47K61MV5BV1A22BOJR"
IPSEC = "AQNRU3mG7TVTO2BkR47usntb102uFJtugbo6BSGvgqt4AQ=="
LONG_NAME = ".".join(["a" * 63] * 3 + ["b" * 61]) + "."  # 255 octets on the wire

TEXT: dict[str, list[str]] = {
    "NS": ["ns1.example.", ".", "a.b.c.d.e.f.g.h.i.j.k.example.", LONG_NAME],
    "CNAME": ["target.example.", "."],
    "SOA": [
        "ns.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ". . 0 0 0 0 0",
        "a.example. b.example. 4294967295 4294967295 4294967295 4294967295 4294967295",
    ],
    "PTR": ["host.example.", "."],
    "HINFO": ['"INTEL-386" "UNIX"', '"" ""', '"%s" "x"' % ("c" * 255)],
    "MX": ["10 mail.example.", "0 .", "65535 example."],
    "TXT": ['"hello"', '""', '"a" "b" "" "c"', '"%s"' % ("x" * 255),
            " ".join(f'"{i}"' for i in range(40))],
    "RP": ["mbox.example. txt.example.", ". .", "example. ."],
    "AFSDB": ["1 afs.example.", "65535 ."],
    "X25": ['"311061700956"', '""'],
    "ISDN": ['"150862028003217" "004"', '"150862028003217"', '"" ""', '""'],
    "RT": ["10 relay.example.", "0 ."],
    "SIG": ["A 5 2 3600 20250101000000 20240101000000 12345 example. AQID",
            "NXT 1 0 0 0 0 0 . AA=="],
    "KEY": ["256 3 5 AQID", "49152 3 5", "0 0 0 AA=="],
    "GPOS": ["-32.6882 116.8652 10.0", "0 0 0", "90 -180 +5", "+.5 1. -0",
             "-90.0 180 -12345678901234567890"],
    "LOC": [
        "60 9 0.000 N 24 39 0.000 E 10.00m 20.00m 2000.00m 20.00m",
        "0 0 0 N 0 0 0 E 0m 0m 0m 0m",
        "90 0 0 S 180 0 0 W -100000.00m 90000000m 90000000m 90000000m",
        "42 21 54 N 71 06 18 W -24m 30m",
    ],
    "CERT": ["PKIX 65535 255 AQID", "1 0 0 " + KEY, "URI 1 1 AA=="],
    "DNAME": ["target.example.", "."],
    "DS": ["12345 8 2 " + H64, "1 5 1 " + "cd" * 20, "1 8 4 " + "ef" * 48, "1 8 3 " + H64,
           "1 8 5 ab", "60485 5 200 " + "00" * 100],
    "SSHFP": ["1 1 " + "12" * 20, "4 2 " + H64, "1 3 ab", "0 0 00"],
    "RRSIG": [
        "A 13 2 3600 20250101000000 20240101000000 12345 example. AQIDBA==",
        "TYPE65535 255 255 4294967295 0 0 65535 . AA==",
        "SOA 8 0 0 20250101000000 20240101000000 1 a.long.signer.example. " + KEY,
    ],
    "NSEC": ["next.example. A NS SOA RRSIG NSEC DNSKEY", "next.example.",
             "a. TYPE65535 TYPE1000 CAA", ". A"],
    "DNSKEY": ["257 3 13 " + KEY, "256 3 8 AQAB", "0 0 0 AA=="],
    "NSEC3": [f"1 1 10 AABBCCDD {NSEC3_NEXT} A RRSIG", f"1 0 0 - {NSEC3_NEXT}",
              "255 255 65535 " + "ab" * 255 + " 00 TYPE65534"],
    "NSEC3PARAM": ["1 0 10 AABBCCDD", "1 0 0 -", "0 0 0 " + "ff" * 255],
    "TLSA": ["3 1 1 " + H64, "3 1 2 " + "cd" * 64, "3 0 0 0102030405", "0 0 3 ab"],
    "SMIMEA": ["3 1 1 " + H64, "0 0 0 abcd"],
    "HIP": [
        "2 200100107B1A74DF365639CC39F1D578 " + KEY + " rvs.example.",
        "2 200100107B1A74DF365639CC39F1D578 " + KEY,
        "2 200100107B1A74DF365639CC39F1D578 AwEA rvs1.example. rvs2.example. .",
    ],
    "NINFO": ['"a" "b"', '""'],
    "CDS": ["0 0 0 00", "12345 8 2 " + H64],
    "CDNSKEY": ["0 3 0 AA==", "257 3 13 " + KEY],
    "OPENPGPKEY": [KEY],
    "CSYNC": ["66 3 A NS AAAA", "0 0", "4294967295 65535 TYPE65535"],
    "ZONEMD": ["2018031900 1 1 " + "ab" * 48, "1 1 2 " + "cd" * 64, "1 1 240 " + "ef" * 12,
               "1 240 1 " + "ab" * 48, "1 1 3 " + "ab" * 100],
    "DSYNC": ["CDS 1 5359 cds-scanner.example.", "TYPE0 0 0 ."],
    "HHIT": [KEY],
    "BRID": [KEY],
    "SPF": ['"v=spf1 -all"'],
    "NID": ["10 0014:4fff:ff20:ee64"],
    "L32": ["10 10.1.2.0"],
    "L64": ["10 2001:0DB8:1140:1000"],
    "LP": ["10 l64-subnet1.example.", "0 ."],
    "EUI48": ["00-00-5e-00-53-2a"],
    "EUI64": ["00-00-5e-ef-10-00-00-2a"],
    "TKEY": ["gss-tsig. 1 2 3 0 AQID AQID", "gss-tsig.example. 1 2 3 0 AQID"],
    "URI": ['10 1 "ftp://ftp1.example.com/public"', '0 0 "x"'],
    "CAA": ['0 issue "ca.example.net"', '128 tbs "Unknown"', '0 issuewild ""', '0 a ""'],
    "AVC": ['"app-name:WOLFGANG|app-class:OAM"'],
    "AMTRELAY": ["0 0 0 .", "10 1 1 203.0.113.15", "10 0 2 2001:db8::15",
                 "128 1 3 amtrelays.example."],
    "RESINFO": ['"qnamemin" "exterr=15,16,17"'],
    "WALLET": ['"BTC" "bc1qexample"'],
    "DLV": ["12345 8 2 " + H64],
}
TEXT_IN: dict[str, list[str]] = {
    "A": ["192.0.2.1", "0.0.0.0"],
    "WKS": ["10.0.0.1 6 0 1 2 21 23", "10.0.0.1 17", "10.0.0.1 6 65535"],
    "NSAP": ["0x47.0005.80.005a00.0000.0001.e133.ffffff000161.00"],
    "NSAP-PTR": ["foo.example."],
    "PX": ["10 net2.it. PRMD-net2.ADMD-p400.C-it.", "0 map822.example. example."],
    "AAAA": ["2001:db8::1", "::"],
    "SRV": ["10 60 5060 bigbox.example.com.", "0 0 0 .", "1 2 3 sip.example."],
    "NAPTR": ['100 50 "s" "z3950+I2L+I2C" "" _z3950._tcp.gatech.edu.',
              '100 10 "" "" "!^.*$!sip:x@example.com!" .', '1 2 "" "" "" _sip.example.'],
    "KX": ["10 kdc.example."],
    "APL": ["1:192.168.32.0/21 !1:192.168.38.0/28", "1:224.0.0.0/4 2:FF00:0:0:0:0:0:0:0/8", "",
            "1:0.0.0.0/0", "2:2001:db8::1/128 !2:::/0"],
    "IPSECKEY": [f"10 1 2 192.0.2.38 {IPSEC}", f"10 0 2 . {IPSEC}",
                 f"10 2 2 2001:0DB8:0:8002::2000:1 {IPSEC}",
                 f"10 3 2 mygateway.example.com. {IPSEC}", f"10 3 2 gw.example. {IPSEC}"],
    "DHCID": ["AAIBY2/AuCccgoJbsaxcQc9TUapptP69lOjxfNuVAA2kjEA="],
    "SVCB": [
        "0 svc.example.",
        "1 .",
        "1 . alpn=h2,h3 port=8443 ipv4hint=192.0.2.1,192.0.2.2",
        "16 foo.example.org. mandatory=alpn,ipv4hint alpn=h2 ipv4hint=192.0.2.1",
        "1 . alpn=h2 no-default-alpn docpath=a,b",
        "1 . ipv6hint=2001:db8::1,2001:db8::2",
        "1 . mandatory=key65000 key65000=x key65444",
        "1 . dohpath=/dns-query{?dns}",
        "1 . ohttp",
        "1 example. ech=AAYAAQIDBAU=",
    ],
    "HTTPS": ["1 . alpn=h3,h2 ipv4hint=192.0.2.1 ipv6hint=2001:db8::1", "0 cdn.example."],
}


@dataclass(frozen=True)
class Seed:
    rclass: int
    rtype: int
    wire: bytes
    label: str


def _opt(*options: dns.edns.Option) -> bytes:
    return dns.rdtypes.ANY.OPT.OPT(1232, 41, options).to_wire()


def _seeds() -> list[Seed]:
    seeds = []
    for mnemonic, texts in [*TEXT.items(), *TEXT_IN.items()]:
        rtype = dns.rdatatype.from_text(mnemonic)
        # the class-independent types once more in class HS, where IN types are opaque
        for rclass, text in [(IN, t) for t in texts] + [(HS, texts[0])] * (mnemonic in TEXT):
            wire = dns.rdata.from_text(rclass, rtype, text).to_wire()
            seeds.append(Seed(rclass, rtype, wire, f"{rclass} {mnemonic} {text[:40]}"))
    options = [
        _opt(),
        _opt(dns.edns.ECSOption("192.0.2.0", 24, 0), dns.edns.EDEOption(15, "blocked")),
        _opt(dns.edns.ECSOption("2001:db8::", 56, 48), dns.edns.EDEOption(0)),
        _opt(dns.edns.ECSOption("0.0.0.0", 0), dns.edns.ECSOption("192.0.2.129", 25)),
        _opt(dns.edns.NSIDOption(b"ns1"), dns.edns.CookieOption(b"12345678", b"")),
        _opt(dns.edns.CookieOption(b"12345678", b"s" * 16), dns.edns.GenericOption(65001, b"xyz")),
        _opt(dns.edns.ReportChannelOption(dns.name.from_text("agent.example.")),
             dns.edns.EDEExtraTextLanguageOption("en"),
             dns.edns.FilteringContactOption("mailto:x@example.com"),
             dns.edns.FilteringOrganizationOption("Ex\u00e4mple"),
             dns.edns.FilteringDBOption("db")),
        _opt(dns.edns.GenericOption(15, b"\x00\x12text\x00")),
    ]
    seeds += [Seed(1232, 41, w, f"OPT {i}") for i, w in enumerate(options)]
    tsig = dns.rdtypes.ANY.TSIG.TSIG(255, 250, dns.name.from_text("hmac-sha256."),
                                     1700000000, 300, b"m" * 32, 0x1234, 0, b"")
    seeds.append(Seed(255, 250, tsig.to_wire(), "TSIG"))
    seeds.append(Seed(255, 250, tsig.replace(error=18, other=b"\0" * 6).to_wire(), "TSIG 2"))
    tsig = tsig.replace(algorithm=dns.name.from_text("example."), mac=b"")
    seeds.append(Seed(255, 250, tsig.to_wire(), "TSIG 3"))
    for text in ("chaos.example. 1234", ". 0"):
        seeds.append(Seed(CH, 1, dns.rdata.from_text(CH, 1, text).to_wire(), f"CH A {text}"))
    return seeds


SEEDS = _seeds()
COVERED = sorted({(s.rclass if s.rclass in (IN, CH) else HS, s.rtype) for s in SEEDS})


# --- the harness: one record in a real message; dnspython's verdict and ours ---------------

QNAME = b"\x07example\x00"


def embed(rclass: int, rtype: int, rd: bytes) -> tuple[bytes, int]:
    """Answers a response holding one record with RDATA *rd* (OPT in the additional
    section, owned by the root) and the RDATA's offset; names in *rd* may point at the
    question name at offset 12."""
    if rtype == 41:
        counts, owner = (1, 0, 0, 1), b"\x00"
    else:
        counts, owner = (1, 1, 0, 0), b"\xc0\x0c"
    head = struct.pack("!HHHHHH", 0x1234, 0x8180, *counts) + QNAME + struct.pack("!HH", 1, 1)
    head += owner + struct.pack("!HHIH", rtype, rclass, 300, len(rd))
    return head + rd, len(head)


def dnspython_accepts(rclass: int, rtype: int, rd: bytes) -> bool:
    msg, off = embed(rclass, rtype, rd)
    try:
        if rtype == 250:  # a TSIG record needs a key to be read in a message
            dns.rdata.from_wire(rclass, rtype, msg, off, len(rd))
        else:
            dns.message.from_wire(msg)
    except Exception:
        return False
    return True


def forwarder_accepts(rclass: int, rtype: int, rd: bytes) -> bool:
    msg, off = embed(rclass, rtype, rd)
    try:
        rdata.check(msg, off, len(msg), rtype, rclass, name_checker(msg))
    except FormError:
        return False
    return True


def assert_agrees(rclass: int, rtype: int, rd: bytes) -> None:
    want = dnspython_accepts(rclass, rtype, rd)
    assert forwarder_accepts(rclass, rtype, rd) == want, (
        f"class {rclass} type {dns.rdatatype.to_text(rtype)} rdata {rd.hex()}: "
        f"dnspython {'accepts' if want else 'rejects'} it"
    )


def edits(rd: bytes) -> list[bytes]:
    """Answers the truncations, single-bit flips and pointer and length values at every
    position (in long RDATA: the first and last 64 and a sample between), and a few
    extensions of *rd*."""
    n = len(rd)
    at = range(n) if n <= 160 else [*range(64), *range(64, n - 64, 97), *range(n - 64, n)]
    out = [rd[:i] for i in at]
    for i in at:
        for bit in range(8):
            out.append(rd[:i] + bytes([rd[i] ^ (1 << bit)]) + rd[i + 1 :])
        for value in (0x00, 0xC0, 0xFF):
            out.append(rd[:i] + bytes([value]) + rd[i + 1 :])
    out += [rd + tail for tail in (b"\x00", b"\x01", b"\x01a\x00", b"\xc0\x0c", b"\x00\x02\x00")]
    return out


# --- tests ---------------------------------------------------------------------------------


def test_every_type_dnspython_parses_has_a_rule_and_no_other() -> None:
    """Coverage: for classes IN, CH and others, the types with a rule (or listed as opaque)
    are exactly those dnspython does not read as generic RDATA."""
    generic = dns.rdata.GenericRdata
    for rclass, ours in (
        (IN, {**rdata.ANY_CLASS, **rdata.IN_CLASS}),
        (CH, {**rdata.ANY_CLASS, **rdata.CH_CLASS}),
        (HS, rdata.ANY_CLASS),
    ):
        known = {
            t.value for t in dns.rdatatype.RdataType
            if dns.rdata.get_rdata_class(rclass, t) is not generic
        }
        assert known == {code for code, _ in ours.values()}, rclass
        for mnemonic, (code, _) in ours.items():
            assert dns.rdatatype.to_text(code).replace("_", "-") == mnemonic
    # and each has valid examples, which the tests below edit
    for rclass, ours in ((IN, rdata.IN_CLASS), (CH, rdata.CH_CLASS)):
        assert {(rclass, code) for code, _ in ours.values()} <= set(COVERED)
    assert {(HS, code) for code, _ in rdata.ANY_CLASS.values()} <= set(COVERED)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: s.label)
def test_valid_rdata_passes(seed: Seed) -> None:
    assert dnspython_accepts(seed.rclass, seed.rtype, seed.wire)
    assert forwarder_accepts(seed.rclass, seed.rtype, seed.wire)


@pytest.mark.parametrize("key", COVERED, ids=lambda k: f"{k[0]}-{dns.rdatatype.to_text(k[1])}")
def test_every_single_edit_agrees_with_dnspython(key: tuple[int, int]) -> None:
    """Truncated, bit-flipped, overwritten and extended RDATA of each type: rejected exactly
    when dnspython rejects the message holding it."""
    for seed in SEEDS:
        if (seed.rclass if seed.rclass in (IN, CH) else HS, seed.rtype) == key:
            for rd in edits(seed.wire):
                assert_agrees(seed.rclass, seed.rtype, rd)


def test_compressed_names_are_accepted_only_where_dnspython_decompresses() -> None:
    """Each `example.` in RDATA replaced by a pointer to the question name: MX, SOA, SRV and
    their kin accept it; RRSIG signers, NSEC next names, SVCB targets, DNAME do not."""
    verdicts = {}
    for seed in SEEDS:
        at = seed.wire.find(QNAME)
        while at >= 0:
            rd = seed.wire[:at] + b"\xc0\x0c" + seed.wire[at + len(QNAME) :]
            assert_agrees(seed.rclass, seed.rtype, rd)
            verdicts[dns.rdatatype.to_text(seed.rtype)] = forwarder_accepts(
                seed.rclass, seed.rtype, rd)
            at = seed.wire.find(QNAME, at + 1)
    for mnemonic in ("NS", "CNAME", "SOA", "PTR", "MX", "RP", "AFSDB", "RT", "SIG", "PX",
                     "SRV", "NAPTR"):
        assert verdicts[mnemonic] is True, mnemonic
    for mnemonic in ("DNAME", "RRSIG", "NSEC", "HIP", "LP", "KX", "NSAP-PTR", "SVCB",
                     "IPSECKEY", "AMTRELAY", "DSYNC", "TKEY", "TSIG"):
        assert verdicts[mnemonic] is False, mnemonic


def test_every_record_of_a_compressed_response_passes() -> None:
    """A response as dnspython renders it, compressing the names of NS, CNAME, SOA, MX, PTR
    against the owners: each record, read in place, passes."""
    response = dns.message.make_response(dns.message.make_query("example.", "A"))
    count = 0
    for seed in SEEDS:
        if seed.rclass == IN and seed.rtype not in (41, 250):
            rd = dns.rdata.from_wire(IN, seed.rtype, seed.wire, 0, len(seed.wire))
            owner = dns.name.from_text(f"r{count}.example.")
            response.answer.append(dns.rrset.from_rdata(owner, 300, rd))
            count += 1
    msg = response.to_wire(max_size=65535)
    check_name = name_checker(msg)
    off = check_name(12, len(msg), False) + 4
    for _ in range(count):
        off = check_name(off, len(msg), True)
        rtype, rclass, _ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
        off += 10
        rdata.check(msg, off, off + rdlen, rtype, rclass, check_name)
        off += rdlen
    assert off == len(msg)
    assert msg.count(b"\xc0\x0c") > count  # owners and names in RDATA point at example.


def test_the_cases_of_the_issue_are_rejected_with_the_type_named() -> None:
    """A records of 3 and 5 octets, an MX whose name points at itself, an empty TXT."""
    cases = [(IN, 1, b"\x0a\x00\x00"), (IN, 1, b"\x0a\x00\x00\x01\x02"), (IN, 16, b""),
             (IN, 15, b"\x00\x0a\xc0\x00")]
    for rclass, rtype, rd in cases:
        msg, off = embed(rclass, rtype, rd)
        if rtype == 15:  # the pointer targets the exchange itself
            msg = msg[:-2] + struct.pack("!H", 0xC000 | off + 2)
        with pytest.raises(FormError, match=rf"^{dns.rdatatype.to_text(rtype)} record data: "):
            rdata.check(msg, off, len(msg), rtype, rclass, name_checker(msg))
        assert not dnspython_accepts(rclass, rtype, msg[off:])


@pytest.mark.parametrize("rclass,rtype", [(IN, 0), (IN, 10), (IN, 30), (IN, 255), (IN, 32768),
                                          (IN, 65280), (HS, 1), (CH, 28), (255, 33)])
def test_types_dnspython_keeps_as_opaque_accept_any_bytes(rclass: int, rtype: int) -> None:
    for rd in (b"", b"\x01", b"\xc0\x0c\xff", bytes(range(256))):
        assert dnspython_accepts(rclass, rtype, rd)
        assert forwarder_accepts(rclass, rtype, rd)


# --- boundaries, each with dnspython's verdict ------------------------------------------------


def cs(*strings: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in strings)


def svcb(*params: tuple[int, bytes], priority: int = 1, target: bytes = b"\x00") -> bytes:
    return struct.pack("!H", priority) + target + b"".join(
        struct.pack("!HH", k, len(v)) + v for k, v in params)


def opt(*options: tuple[int, bytes]) -> bytes:
    return b"".join(struct.pack("!HH", code, len(v)) + v for code, v in options)


def apl(family: int, prefix: int, address: bytes, negate: bool = False) -> bytes:
    return struct.pack("!HBB", family, prefix, len(address) | negate << 7) + address


def loc(lat: int = 0, lon: int = 0, sizes: bytes = b"\x12\x16\x13", version: int = 0) -> bytes:
    return bytes([version]) + sizes + struct.pack("!III", 0x80000000 + lat, 0x80000000 + lon,
                                                  10000000)


DEG = 3600000
ALPN = (1, b"\x02h2")
EDGES: list[tuple[str, int, int, bytes, bool]] = [
    ("GPOS two points", IN, 27, cs(b"1.2.3", b"0", b"0"), False),
    ("GPOS lone point", IN, 27, cs(b".", b"0", b"0"), False),
    ("GPOS lone sign", IN, 27, cs(b"-", b"0", b"0"), False),
    ("GPOS empty", IN, 27, cs(b"", b"0", b"0"), False),
    ("GPOS exponent", IN, 27, cs(b"1e5", b"0", b"0"), False),
    ("GPOS signs at the limits", IN, 27, cs(b"+90", b"-180", b"-1"), True),
    ("GPOS rounds to 90", IN, 27, cs(b"90.0000000000000000001", b"0", b"0"), True),
    ("GPOS past 90", IN, 27, cs(b"90.000001", b"0", b"0"), False),
    ("GPOS past 180", IN, 27, cs(b"0", b"-180.5", b"0"), False),
    ("GPOS two strings", IN, 27, cs(b"0", b"0"), False),
    ("GPOS four strings", IN, 27, cs(b"0", b"0", b"0", b"0"), False),
    ("LOC at 90 N 180 E", IN, 29, loc(90 * DEG, 180 * DEG), True),
    ("LOC at 90 S 180 W", IN, 29, loc(-90 * DEG, -180 * DEG), True),
    ("LOC past 90 N", IN, 29, loc(90 * DEG + 1), False),
    ("LOC past 90 S", IN, 29, loc(-90 * DEG - 1), False),
    ("LOC past 180 E", IN, 29, loc(0, 180 * DEG + 1), False),
    ("LOC past 180 W", IN, 29, loc(0, -180 * DEG - 1), False),
    ("LOC zero size", IN, 29, loc(sizes=b"\x00\x10\x99"), True),
    ("LOC zero base with exponent", IN, 29, loc(sizes=b"\x01\x10\x10"), False),
    ("LOC exponent 10", IN, 29, loc(sizes=b"\x1a\x10\x10"), False),
    ("LOC base 10", IN, 29, loc(sizes=b"\x10\xa0\x10"), False),
    ("LOC version 1", IN, 29, loc(version=1), False),
    ("APL IPv4 /32", IN, 42, apl(1, 32, b"\x0a\x00\x00\x01"), True),
    ("APL IPv4 /33", IN, 42, apl(1, 33, b"\x0a"), False),
    ("APL IPv4 of 5 octets", IN, 42, apl(1, 32, b"\x0a\x00\x00\x00\x01"), False),
    ("APL IPv6 /128", IN, 42, apl(2, 128, b"\x20" * 16, True), True),
    ("APL IPv6 /129", IN, 42, apl(2, 129, b"\x20"), False),
    ("APL IPv6 of 17 octets", IN, 42, apl(2, 0, b"\x20" * 17), False),
    ("APL other family", IN, 42, apl(3, 255, b"\x01" * 127), True),
    ("APL trailing zero octet", IN, 42, apl(1, 24, b"\x0a\x00"), False),
    ("APL empty address", IN, 42, apl(1, 0, b"") + apl(2, 0, b"", True), True),
    ("SVCB no-default-alpn alone", IN, 64, svcb((2, b"")), False),
    ("SVCB no-default-alpn with alpn", IN, 64, svcb(ALPN, (2, b"")), True),
    ("SVCB ech of 6", IN, 64, svcb((5, b"\x00\x04abcd")), True),
    ("SVCB ech of 4", IN, 64, svcb((5, b"\x00\x02ab")), False),
    ("SVCB ech of 5", IN, 64, svcb((5, b"\x00\x03abc")), False),
    ("SVCB ech length mismatch", IN, 64, svcb((5, b"\x00\x05abcd")), False),
    *[(f"SVCB empty key{k}", IN, 64, svcb((k, b"")), False) for k in (0, 1, 3, 4, 5, 6)],
    *[(f"SVCB empty key{k}", IN, 64, svcb((k, b"")), True) for k in (7, 8, 9, 10, 65535)],
    ("SVCB ohttp with a value", IN, 64, svcb((8, b"x")), False),
    ("SVCB docpath empty segment", IN, 64, svcb((10, b"\x00")), False),
    ("SVCB docpath segments", IN, 64, svcb((10, b"\x01a\x02bc")), True),
    ("SVCB alpn overrun", IN, 64, svcb((1, b"\x03h2")), False),
    ("SVCB mandatory alpn", IN, 64, svcb((0, b"\x00\x01"), ALPN), True),
    ("SVCB mandatory mandatory", IN, 64, svcb((0, b"\x00\x00\x00\x01"), ALPN), False),
    ("SVCB mandatory missing key", IN, 64, svcb((0, b"\x00\x03"), ALPN), False),
    ("SVCB mandatory repeated", IN, 64, svcb((0, b"\x00\x01\x00\x01"), ALPN), False),
    ("SVCB mandatory descending", IN, 64, svcb((0, b"\x00\x03\x00\x01"), ALPN, (3, b"\0\1")),
     False),
    ("SVCB mandatory odd", IN, 64, svcb((0, b"\x00\x01\x00"), ALPN), False),
    ("SVCB keys descending", IN, 64, svcb((3, b"\0\1"), ALPN), False),
    ("SVCB keys repeated", IN, 64, svcb(ALPN, ALPN), False),
    ("SVCB port of 3", IN, 64, svcb((3, b"\0\0\1")), False),
    ("SVCB ipv4hint of 6", IN, 64, svcb((4, b"\1" * 6)), False),
    ("SVCB ipv6hint of 32", IN, 64, svcb((6, b"\1" * 32)), True),
    ("SVCB ipv6hint of 20", IN, 64, svcb((6, b"\1" * 20)), False),
    ("SVCB AliasMode with a key", IN, 64, svcb(ALPN, priority=0), False),
    ("SVCB AliasMode", IN, 65, svcb(priority=0, target=QNAME), True),
    ("HTTPS compressed target", IN, 65, svcb(target=b"\xc0\x0c"), False),
    ("OPT cookie of 8", 512, 41, opt((10, b"c" * 8)), True),
    ("OPT cookie of 40", 512, 41, opt((10, b"c" * 40)), True),
    ("OPT cookie of 41", 512, 41, opt((10, b"c" * 41)), False),
    ("OPT cookie of 15", 512, 41, opt((10, b"c" * 15)), False),
    ("OPT cookie of 7", 512, 41, opt((10, b"c" * 7)), False),
    ("OPT ECS /32 scope 32", 512, 41, opt((8, b"\0\1\x20\x20\1\2\3\4")), True),
    ("OPT ECS scope 33", 512, 41, opt((8, b"\0\1\x20\x21\1\2\3\4")), False),
    ("OPT ECS source 33", 512, 41, opt((8, b"\0\1\x21\0\1\2\3\4\0")), False),
    ("OPT ECS family 3", 512, 41, opt((8, b"\0\3\0\0")), False),
    ("OPT ECS /128", 512, 41, opt((8, b"\0\2\x80\0" + b"\xff" * 16)), True),
    ("OPT ECS /25 pad set", 512, 41, opt((8, b"\0\1\x19\0\1\2\3\xc1")), False),
    ("OPT ECS /25", 512, 41, opt((8, b"\0\1\x19\0\1\2\3\x80")), True),
    ("OPT ECS address too long", 512, 41, opt((8, b"\0\1\x18\0\1\2\3\4")), False),
    ("OPT EDE code only", 512, 41, opt((15, b"\0\1")), True),
    ("OPT EDE of 1", 512, 41, opt((15, b"\0")), False),
    ("OPT EDE bad UTF-8", 512, 41, opt((15, b"\0\1\xc3")), False),
    ("OPT EDE bad UTF-8 then NUL", 512, 41, opt((15, b"\0\1\xc3\0")), False),
    ("OPT EDE NUL-terminated", 512, 41, opt((15, b"\0\1ok\0")), True),
    *[(f"OPT {c} bad UTF-8", 512, 41, opt((c, b"\xff")), False) for c in (22, 23, 24, 25)],
    ("OPT NSID any octets", 512, 41, opt((3, b"\xff\0")), True),
    ("OPT report-channel compressed", 512, 41, opt((18, b"\xc0\x0c")), False),
    ("OPT report-channel and more", 512, 41, opt((18, QNAME + b"\0")), False),
    ("OPT option past the end", 512, 41, opt((3, b"ab"))[:-1], False),
    ("OPT truncated header", 512, 41, b"\0\3\0", False),
    ("TSIG error 4095", 255, 250, QNAME + bytes(8) + b"\0\0\0\1\x0f\xff\0\0", True),
    ("TSIG error 4096", 255, 250, QNAME + bytes(8) + b"\0\0\0\1\x10\x00\0\0", False),
    ("NSEC3 empty next", IN, 50, b"\1\0\0\0\0\0", False),
    ("NSEC3 next of 1", IN, 50, b"\1\0\0\0\0\1\xaa", True),
    ("CAA empty tag", IN, 257, b"\0\0v", False),
    ("CAA tag with a hyphen", IN, 257, b"\0\3a-bv", False),
    ("CAA tag A1", IN, 257, b"\0\2A1v", True),
    ("CAA tag not ASCII", IN, 257, b"\0\2\xc3\xa9", False),
    ("ZONEMD private hash of 12", IN, 63, b"\0\0\0\1\1\xf0" + bytes(12), True),
    ("ZONEMD private hash of 11", IN, 63, b"\0\0\0\1\1\xf0" + bytes(11), False),
    ("ZONEMD scheme 0", IN, 63, b"\0\0\0\1\0\1" + bytes(48), False),
    ("ZONEMD hash 0", IN, 63, b"\0\0\0\1\1\0" + bytes(48), False),
    ("ZONEMD SHA-384 of 47", IN, 63, b"\0\0\0\1\1\1" + bytes(47), False),
    ("DS digest type 0", IN, 43, b"\0\1\x08\0" + bytes(1), False),
    ("CDS delete", IN, 59, b"\0\0\0\0\0", True),
    ("CDS delete of 2", IN, 59, b"\0\0\0\0\0\0", False),
    ("DS unknown digest, empty", IN, 43, b"\0\1\x08\xc8", True),
    ("WKS bitmap of 8192", IN, 11, bytes(5 + 8192), True),
    ("WKS bitmap of 8193", IN, 11, bytes(5 + 8193), False),
    ("HINFO three strings", IN, 13, cs(b"a", b"b", b"c"), False),
    ("TXT empty", IN, 16, b"", False),
    ("URI empty target", IN, 256, b"\0\1\0\1", False),
    ("AMTRELAY type 4", IN, 260, b"\0\4", False),
    ("AMTRELAY D bit, type 0", IN, 260, b"\0\x80", True),
    ("AMTRELAY name and more", IN, 260, b"\0\3" + QNAME + b"\0", False),
    ("IPSECKEY type 4", IN, 45, b"\0\4\2key", False),
    ("IPSECKEY no gateway", IN, 45, b"\0\0\2", True),
    ("NSEC window of 32", IN, 47, b"\0\0\x20" + b"\1" * 32, True),
    ("NSEC window of 33", IN, 47, b"\0\0\x21" + b"\1" * 33, False),
    ("NSEC window of 0", IN, 47, b"\0\0\0", False),
    ("NSEC window ending in 0", IN, 47, b"\0\0\2\x40\0", False),
    ("NSEC windows repeated", IN, 47, b"\0\0\1\x40\0\1\x40", False),
    ("NSEC windows ascending", IN, 47, b"\0\0\1\x40\1\1\x40", True),
    ("CSYNC of 5", IN, 62, bytes(5), False),
    ("CSYNC of 6", IN, 62, bytes(6), True),
    ("SOA 19 octets short", IN, 6, b"\0\0" + bytes(19), False),
    ("SOA 21 octets", IN, 6, b"\0\0" + bytes(21), False),
    ("SOA names compressed", IN, 6, b"\xc0\x0c\xc0\x0c" + bytes(20), True),
    ("HIP HIT past the end", IN, 55, b"\x10\2\0\0abc", False),
    ("HIP compressed server", IN, 55, b"\1\2\0\1ab\xc0\x0c", False),
    ("ISDN three strings", IN, 20, cs(b"1", b"2", b"3"), False),
    ("L32 of 5", IN, 105, bytes(5), False),
    ("EUI48 of 7", IN, 108, bytes(7), False),
    ("CH A compressed", CH, 1, b"\xc0\x0c\0\1", False),
    ("CH A", CH, 1, QNAME + b"\0\1", True),
    ("LP compressed", IN, 107, b"\0\1\xc0\x0c", False),
    ("SIG compressed signer", IN, 24, bytes(18) + b"\xc0\x0c", True),
    ("RRSIG compressed signer", IN, 46, bytes(18) + b"\xc0\x0c", False),
    ("NS of 256 octets", IN, 2, (b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"b" * 62 + b"\0", False),
    ("KX 3 octets", IN, 36, b"\0\1\0", True),
    ("MX preference only", IN, 15, b"\0\1", False),
]


@pytest.mark.parametrize("why,rclass,rtype,rd,accepted", EDGES, ids=[e[0] for e in EDGES])
def test_boundaries_agree_with_dnspython(
    why: str, rclass: int, rtype: int, rd: bytes, accepted: bool
) -> None:
    assert dnspython_accepts(rclass, rtype, rd) is accepted
    assert forwarder_accepts(rclass, rtype, rd) is accepted


# --- property tests ------------------------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("RDATA_FUZZ_EXAMPLES", "300"))
CLASS_TYPES = sorted({(s.rclass, s.rtype) for s in SEEDS})


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw: st.DrawFn) -> tuple[int, int, bytes]:
    """A valid record's RDATA after one to six random edits."""
    seed = draw(st.sampled_from(SEEDS))
    rd = bytearray(seed.wire)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "extend"]))
        at = draw(st.integers(0, max(len(rd) - 1, 0)))
        byte = draw(st.sampled_from([0, 1, 2, 4, 16, 32, 63, 64, 0xC0, 0xFF]) | st.integers(0, 255))
        if op == "flip" and rd:
            rd[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and rd:
            rd[at] = byte
        elif op == "insert":
            rd.insert(at, byte)
        elif op == "delete" and rd:
            del rd[at]
        elif op == "cut":
            del rd[at:]
        else:
            rd += draw(st.binary(max_size=8))
    return seed.rclass, seed.rtype, bytes(rd)


random_rdata = st.tuples(st.sampled_from(CLASS_TYPES), st.binary(max_size=96)).map(
    lambda t: (t[0][0], t[0][1], t[1]))


@fuzz(FUZZ_EXAMPLES)
@given(mutated())
def test_mutated_rdata_agrees_with_dnspython(case: tuple[int, int, bytes]) -> None:
    assert_agrees(*case)


@fuzz(FUZZ_EXAMPLES)
@given(random_rdata)
def test_random_rdata_agrees_with_dnspython(case: tuple[int, int, bytes]) -> None:
    assert_agrees(*case)


@pytest.mark.slow
@fuzz(FUZZ_EXAMPLES * 6)
@given(mutated() | random_rdata)
def test_long_fuzz_agrees_with_dnspython(case: tuple[int, int, bytes]) -> None:
    assert_agrees(*case)


def dnspython_name_end(data: bytes, off: int, compressible: bool) -> int | None:
    parser = dns.wire.Parser(data, off)
    try:
        dns.name.from_wire_parser(parser, compressible)
    except dns.exception.DNSException:
        return None
    return parser.current


def our_name_end(data: bytes, off: int, compressible: bool) -> int | None:
    try:
        return name_checker(data)(off, len(data), compressible)
    except FormError:
        return None


@pytest.mark.parametrize("hops", [1, 15, 16, 17, 20])
def test_the_name_checker_used_here_allows_16_pointer_hops(hops: int) -> None:
    # a name, then pointers each to the one before: the last starts a chain of *hops*
    data = b"\x01a\x00" + b"".join(struct.pack("!H", 0xC000 | (1 + 2 * i if i else 0))
                                    for i in range(hops))
    start = len(data) - 2
    assert our_name_end(data, start, True) == dnspython_name_end(data, start, True)
    assert (our_name_end(data, start, True) is not None) is (hops <= 16)


@pytest.mark.parametrize("why,data,start", [
    ("pointer to itself", b"\x00\xc0\x01", 1),
    ("forward pointer", b"\xc0\x02\x00", 0),
    ("target overlaps the pointer", b"\x01a\x01b\xc0\x00", 2),
    ("target runs into the name", b"\x01a\x01b\xc0\x00\x00", 4),
    ("backward pointer", b"\x01a\x00\x01b\xc0\x00", 3),
    ("pointer to a pointer further back", b"\x00\xc0\x00\xc0\x01", 3),
    ("pointer to a pointer further on", b"\x00\xc0\x04\xc0\x01\x00", 3),
    ("label type 01", b"\x40", 0),
    ("label type 10", b"\x80", 0),
    ("255 octets", dns.name.from_text(LONG_NAME).to_wire(), 0),
])
def test_the_name_checker_used_here_agrees_on_pointer_rules(why: str, data: bytes,
                                                             start: int) -> None:
    for compressible in (True, False):
        assert our_name_end(data, start, compressible) == dnspython_name_end(
            data, start, compressible)


@fuzz(FUZZ_EXAMPLES)
@given(st.binary(min_size=1, max_size=40), st.binary(max_size=40), st.booleans())
def test_the_name_checker_used_here_agrees_with_dnspython(
    before: bytes, name: bytes, compressible: bool
) -> None:
    """The check_name these tests hand to `check` is itself held to dns.name: names in
    random bytes, with pointers into what precedes them."""
    data = before + name
    assert our_name_end(data, len(before), compressible) == dnspython_name_end(
        data, len(before), compressible)
