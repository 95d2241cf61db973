"""Tests for forwarder.dns.answers: wire scanning, suffix matching, judging and stripping.

Responses are real wire messages built with dnspython, or hand-assembled where a test
needs a compression layout dnspython would never write.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from forwarder.config import model
from forwarder.dns import answers, netsets

PROTECTED = answers.SuffixSet(model.DEFAULT_PROTECTED)
ALLOWED = netsets.NetworkSet.parse(model.DEFAULT_ALLOWED)

RR = tuple[str, str, tuple[str, ...]]  # owner, type, rdata texts


def response(
    qname: str,
    qtype: str = "A",
    answer: Sequence[RR] = (),
    additional: Sequence[RR] = (),
    authority: Sequence[RR] = (),
    edns: bool = False,
    rcode: int = 0,
) -> bytes:
    """Return the wire form of a response to *qname*/*qtype* carrying the given RRsets."""
    query = dns.message.make_query(qname, qtype, use_edns=0 if edns else False)
    r = dns.message.make_response(query)
    r.set_rcode(rcode)
    for section, rrs in ((r.answer, answer), (r.authority, authority), (r.additional, additional)):
        for owner, rtype, rdatas in rrs:
            section.append(dns.rrset.from_text(owner, 60, "IN", rtype, *rdatas))
    return r.to_wire(want_shuffle=False)  # keep the rdata order the test wrote


def judge(wire: bytes) -> answers.Judgement:
    return answers.judge(answers.scan_response(wire), PROTECTED, ALLOWED)


def texts(addresses: tuple[answers.Address, ...]) -> list[str]:
    return [a.text for a in addresses]


def parsed_answer(wire: bytes) -> list[str]:
    """The answer section as dnspython reads it, one line per record."""
    msg = dns.message.from_wire(wire)
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
        for rrset in msg.answer
        for rd in rrset
    ]


# Hand assembly, for layouts dnspython does not produce.


def wire_name(text: str) -> bytes:
    return dns.name.from_text(text).to_wire()


def header(qd: int, an: int, ns: int = 0, ar: int = 0, flags: int = 0x8180) -> bytes:
    return struct.pack("!6H", 0x1234, flags, qd, an, ns, ar)


def question(name: bytes, qtype: int = 1) -> bytes:
    return name + struct.pack("!HH", qtype, 1)


def record(owner: bytes, rtype: int, rdata: bytes, rclass: int = 1) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, 60, len(rdata)) + rdata


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


A_52 = bytes([52, 219, 1, 1])
A_10 = bytes([10, 0, 0, 1])


# -- scan_response ----------------------------------------------------------------------


def test_scan_simple_answer() -> None:
    """Question, rcode, chain and each A record with the byte range of its record."""
    wire = response(
        "S3.AP-Northeast-1.AmazonAWS.com.",
        answer=[("s3.ap-northeast-1.amazonaws.com.", "A", ("52.219.1.1", "10.0.0.1"))],
    )
    scan = answers.scan_response(wire)
    assert scan.qname == "s3.ap-northeast-1.amazonaws.com"  # lower-cased, no trailing dot
    assert scan.qtype == 1
    assert scan.rcode == 0
    assert scan.chain == ("s3.ap-northeast-1.amazonaws.com",)
    assert texts(scan.addresses) == ["52.219.1.1", "10.0.0.1"]
    assert scan.additional_addresses == ()
    first, second = scan.addresses
    assert first.owner == "s3.ap-northeast-1.amazonaws.com"
    assert (first.rtype, first.section, first.packed) == (1, 1, A_52)
    # The range is the whole record: owner pointer (2) + fixed part (10) + rdata (4).
    assert first.length == second.length == 16
    assert second.offset == first.offset + first.length
    assert second.offset + second.length == len(wire)
    assert wire[first.offset : first.offset + first.length].endswith(A_52)


def test_scan_aaaa_and_rcode_and_root() -> None:
    """AAAA addresses; the header rcode; the root name scans as ""."""
    wire = response("example.org.", "AAAA", answer=[("example.org.", "AAAA", ("2600::1",))])
    scan = answers.scan_response(wire)
    assert (scan.qtype, texts(scan.addresses)) == (28, ["2600::1"])
    assert scan.addresses[0].rtype == 28 and len(scan.addresses[0].packed) == 16
    nx = answers.scan_response(
        response("nope.example.", rcode=3, authority=[("example.", "SOA", (
            "ns.example. host.example. 1 2 3 4 5",))])
    )
    assert (nx.rcode, nx.addresses, nx.chain) == (3, (), ("nope.example",))
    root = answers.scan_response(
        response(".", "NS", answer=[(".", "NS", ("a.root-servers.net.",))])
    )
    assert (root.qname, root.qtype, root.chain) == ("", 2, ("",))


def test_scan_https_and_svcb_hints() -> None:
    """HTTPS/SVCB ipv4hint and ipv6hint values are addresses of the record's owner."""
    wire = response(
        "bucket.s3.ap-northeast-1.amazonaws.com.",
        "HTTPS",
        answer=[
            ("bucket.s3.ap-northeast-1.amazonaws.com.", "HTTPS",
             ("1 . alpn=h2 ipv4hint=52.219.1.1,10.0.0.9 ipv6hint=2600::1",)),
            ("_dns.resolver.example.", "SVCB", ("1 dot.example. alpn=dot ipv4hint=10.0.0.53",)),
            ("alias.example.", "HTTPS", ("0 target.example.",)),  # alias mode: no hints
        ],
    )
    scan = answers.scan_response(wire)
    assert texts(scan.addresses) == ["52.219.1.1", "10.0.0.9", "2600::1", "10.0.0.53"]
    https = scan.addresses[:3]
    assert {(a.rtype, a.offset, a.length) for a in https} == {
        (65, https[0].offset, https[0].length)
    }  # one record: one range for all of its hints
    assert scan.addresses[3].rtype == 64
    assert scan.addresses[3].owner == "_dns.resolver.example"
    verdict = answers.judge(scan, PROTECTED, ALLOWED)
    assert verdict.protected_name == "bucket.s3.ap-northeast-1.amazonaws.com"
    assert texts(verdict.violations) == ["52.219.1.1", "2600::1"]


def test_scan_additional_section() -> None:
    """A/AAAA in the additional section are listed apart; OPT and others are skipped."""
    wire = response(
        "example.com.",
        "NS",
        answer=[("example.com.", "NS", ("ns1.example.com.", "ns2.example.com."))],
        additional=[
            ("ns1.example.com.", "A", ("192.0.2.1",)),
            ("ns1.example.com.", "AAAA", ("2001:db8::1",)),
            ("ns2.example.com.", "TXT", ('"x"',)),
        ],
        edns=True,
    )
    scan = answers.scan_response(wire)
    assert scan.addresses == ()
    assert texts(scan.additional_addresses) == ["192.0.2.1", "2001:db8::1"]
    assert all(a.section == 3 for a in scan.additional_addresses)
    assert [a.owner for a in scan.additional_addresses] == ["ns1.example.com"] * 2


def test_scan_ignores_other_classes_and_types() -> None:
    """Only class IN A/AAAA/CNAME/HTTPS/SVCB matter; a CHAOS TXT or an MX is skipped."""
    q = wire_name("x.example.")
    wire = (
        header(1, 3)
        + question(q)
        + record(pointer(12), 16, b"\x03abc", rclass=3)  # TXT CH
        + record(pointer(12), 15, b"\x00\x0a" + pointer(12))  # MX
        + record(pointer(12), 1, A_52, rclass=255)  # A in class ANY: not an address
    )
    scan = answers.scan_response(wire)
    assert scan.addresses == ()
    assert scan.chain == ("x.example",)


def test_scan_names_match_dnspython() -> None:
    """Names with escapes, long labels and mixed case read as dnspython writes them."""
    names = [
        "a\\.b.example.",
        "sp\\032ace.example.",
        "qu\\\"ote.Example.",
        "\\000nul.example.",
        "MiXeD.CaSe.Example.",
        "x" * 40 + ".bucket-" + "y" * 55 + ".s3.amazonaws.com.",
        "-.0.9.z.example.",
        "_tcp.*.example.",
    ]
    for text in names:
        wire = response(text, answer=[(text, "A", ("10.0.0.1",))])
        scan = answers.scan_response(wire)
        expected = dns.name.from_text(text).to_text(omit_final_dot=True).lower()
        # dnspython lower-cases only A-Z: so does the scan
        assert scan.qname == expected, text
        assert scan.addresses[0].owner == expected, text


def test_scan_follows_a_name_through_several_pointers() -> None:
    """A pointer to a name that itself ends in a pointer reads whole."""
    q = wire_name("www.example.com.")  # at 12; "example.com" at 16
    an1 = wire_name("mail.")[:-1] + pointer(16)  # mail.example.com
    off2 = 12 + len(q) + 4
    wire = header(1, 2) + question(q) + record(an1, 1, A_10)
    wire += record(b"\x02db" + pointer(off2), 1, A_52)  # db.mail.example.com
    scan = answers.scan_response(wire)
    assert [a.owner for a in scan.addresses] == ["mail.example.com", "db.mail.example.com"]


# -- CNAME chains -----------------------------------------------------------------------


def test_chain_into_protected_suffix_is_judged() -> None:
    """files.corp.example CNAME bucket.s3...amazonaws.com A 52.219.1.1: a violation."""
    wire = response(
        "files.corp.example.",
        answer=[
            ("files.corp.example.", "CNAME", ("bucket.s3.ap-northeast-1.amazonaws.com.",)),
            ("bucket.s3.ap-northeast-1.amazonaws.com.", "A", ("52.219.1.1",)),
        ],
    )
    scan = answers.scan_response(wire)
    assert scan.chain == ("files.corp.example", "bucket.s3.ap-northeast-1.amazonaws.com")
    verdict = answers.judge(scan, PROTECTED, ALLOWED)
    assert verdict.protected_name == "bucket.s3.ap-northeast-1.amazonaws.com"
    assert texts(verdict.violations) == ["52.219.1.1"]
    assert not verdict.ok


def test_chain_out_of_and_back_into_protected_suffix() -> None:
    """x.amazonaws.com -> y.cdn.example -> z.amazonaws.com A 1.2.3.4: judged, a violation."""
    wire = response(
        "x.amazonaws.com.",
        answer=[
            ("x.amazonaws.com.", "CNAME", ("y.cdn.example.",)),
            ("y.cdn.example.", "CNAME", ("z.amazonaws.com.",)),
            ("z.amazonaws.com.", "A", ("1.2.3.4",)),
        ],
    )
    verdict = judge(wire)
    assert answers.scan_response(wire).chain == ("x.amazonaws.com", "y.cdn.example",
                                                 "z.amazonaws.com")
    assert verdict.protected_name == "x.amazonaws.com"
    assert texts(verdict.violations) == ["1.2.3.4"]


def test_chain_out_of_protected_suffix_is_judged() -> None:
    """A protected query name that CNAMEs to a CDN name is still judged."""
    wire = response(
        "s3.amazonaws.com.",
        answer=[
            ("s3.amazonaws.com.", "CNAME", ("edge.cdn.example.",)),
            ("edge.cdn.example.", "A", ("198.51.100.7", "10.1.1.1")),
        ],
    )
    verdict = judge(wire)
    assert verdict.protected_name == "s3.amazonaws.com"
    assert texts(verdict.violations) == ["198.51.100.7"]


def test_chain_records_out_of_order() -> None:
    """CNAMEs are followed by name, not by position in the section."""
    wire = response(
        "a.example.",
        answer=[
            ("c.example.", "A", ("10.0.0.1",)),
            ("b.example.", "CNAME", ("c.example.",)),
            ("a.example.", "CNAME", ("b.example.",)),
        ],
    )
    assert answers.scan_response(wire).chain == ("a.example", "b.example", "c.example")


def test_chain_loop_stops() -> None:
    """a CNAME b CNAME a: the chain stops at the loop."""
    wire = response(
        "a.example.",
        answer=[("a.example.", "CNAME", ("b.example.",)), ("b.example.", "CNAME", ("a.example.",))],
    )
    assert answers.scan_response(wire).chain == ("a.example", "b.example")


def test_chain_hop_limit() -> None:
    """At most 16 CNAMEs are followed; a protected name past the limit is not in the chain."""
    hops = [(f"h{i}.example.", "CNAME", (f"h{i + 1}.example.",)) for i in range(20)]
    hops.append(("h20.example.", "CNAME", ("far.amazonaws.com.",)))
    wire = response("h0.example.", answer=hops)
    scan = answers.scan_response(wire)
    assert len(scan.chain) == 1 + answers.MAX_CHAIN_HOPS
    assert scan.chain[-1] == "h16.example"
    assert answers.judge(scan, PROTECTED, ALLOWED).protected_name is None


def test_protected_owner_outside_the_chain_is_judged() -> None:
    """An address owned by a protected name is judged even when the chain does not reach it."""
    wire = response(
        "www.example.com.",
        answer=[
            ("www.example.com.", "A", ("93.184.216.34",)),
            ("s3.amazonaws.com.", "A", ("52.219.1.1",)),
        ],
    )
    verdict = judge(wire)
    assert verdict.protected_name == "s3.amazonaws.com"
    assert texts(verdict.violations) == ["93.184.216.34", "52.219.1.1"]


# -- judge ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qname", "addresses", "protected_name", "violations"),
    [
        # The S3 Gateway-endpoint case: public answers for an AWS service name.
        ("s3.ap-northeast-1.amazonaws.com.", ("52.219.1.1", "52.219.1.2"),
         "s3.ap-northeast-1.amazonaws.com", ["52.219.1.1", "52.219.1.2"]),
        # Endpoint-specific names answer private: they pass.
        ("vpce-0abc.s3.ap-northeast-1.vpce.amazonaws.com.", ("10.0.1.5",),
         "vpce-0abc.s3.ap-northeast-1.vpce.amazonaws.com", []),
        # Mixed answers: only the public ones are violations.
        ("ssm.us-east-1.amazonaws.com.", ("10.0.1.5", "3.5.6.7", "100.64.0.9", "100.128.0.1"),
         "ssm.us-east-1.amazonaws.com", ["3.5.6.7", "100.128.0.1"]),
        ("sts.cn-north-1.amazonaws.com.cn.", ("54.222.1.1",),
         "sts.cn-north-1.amazonaws.com.cn", ["54.222.1.1"]),
        ("kms.eu-west-1.api.aws.", ("172.20.0.1",), "kms.eu-west-1.api.aws", []),
        ("x.api.amazonwebservices.com.cn.", ("8.8.8.8",), "x.api.amazonwebservices.com.cn",
         ["8.8.8.8"]),
        # Not protected: not judged at all, public or not.
        ("www.example.com.", ("93.184.216.34",), None, []),
        ("notamazonaws.com.", ("52.219.1.1",), None, []),
        ("amazonaws.com.evil.example.", ("52.219.1.1",), None, []),
    ],
)
def test_judge_a_records(
    qname: str, addresses: tuple[str, ...], protected_name: str | None, violations: list[str]
) -> None:
    """judge: protected names with public addresses are violations; others pass."""
    verdict = judge(response(qname, answer=[(qname, "A", addresses)]))
    assert verdict.protected_name == protected_name
    assert texts(verdict.violations) == violations
    assert verdict.ok is (not violations)


@pytest.mark.parametrize(
    ("address", "violation"),
    [
        ("fd00::5", False),
        ("2600:1f18::1", True),
        ("::ffff:10.0.0.1", False),
        ("::ffff:52.219.1.1", True),
        ("64:ff9b::34db:101", True),  # NAT64 of 52.219.1.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ],
)
def test_judge_aaaa_records(address: str, violation: bool) -> None:
    """judge: IPv6, including IPv4-mapped and NAT64 addresses judged as their IPv4."""
    name = "s3.dualstack.ap-northeast-1.amazonaws.com."
    verdict = judge(response(name, "AAAA", answer=[(name, "AAAA", (address,))]))
    assert verdict.protected_name is not None
    assert (texts(verdict.violations) == [str(ipaddress.ip_address(address))]) is violation
    assert verdict.ok is not violation


def test_judge_additional_addresses_only_for_protected_names() -> None:
    """Additional-section addresses outside the allowed networks are listed when protected."""
    add = [("ns.amazonaws.com.", "A", ("205.251.192.1", "10.0.0.2"))]
    protected = judge(
        response("s3.amazonaws.com.", answer=[("s3.amazonaws.com.", "A", ("10.0.0.1",))],
                 additional=add)
    )
    assert protected.ok  # the answer section is fine; the policy strips the additional
    assert texts(protected.additional_violations) == ["205.251.192.1"]
    plain = judge(
        response("www.example.com.", answer=[("www.example.com.", "A", ("10.0.0.1",))],
                 additional=add)
    )
    assert plain.protected_name is None and plain.additional_violations == ()


def test_judge_with_operator_sets() -> None:
    """Custom protected suffixes and allowed networks replace the defaults."""
    scan = answers.scan_response(
        response("internal.example.com.",
                 answer=[("internal.example.com.", "A", ("203.0.113.10", "10.0.0.1"))])
    )
    protected = answers.SuffixSet(["example.com"])
    allowed = netsets.NetworkSet.parse(["203.0.113.0/24"])
    verdict = answers.judge(scan, protected, allowed)
    assert verdict.protected_name == "internal.example.com"
    assert texts(verdict.violations) == ["10.0.0.1"]
    assert answers.judge(scan, answers.SuffixSet([]), allowed).protected_name is None


# -- SuffixSet / is_under ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("amazonaws.com", "amazonaws.com"),
        ("s3.amazonaws.com", "amazonaws.com"),
        ("S3.AmazonAWS.COM.", "amazonaws.com"),
        ("x.amazonaws.com.cn", "amazonaws.com.cn"),
        ("a.b.api.aws", "api.aws"),
        ("api.amazonwebservices.com.cn", "api.amazonwebservices.com.cn"),
        ("notamazonaws.com", None),
        ("amazonaws.com.evil.example", None),
        ("xapi.aws", None),
        ("aws", None),
        ("com", None),
        ("", None),
    ],
)
def test_suffix_set_label_wise(name: str, suffix: str | None) -> None:
    """Suffixes match whole labels, case-insensitively, with or without a trailing dot."""
    assert PROTECTED.matches(name) == suffix
    assert answers.is_under(name, model.DEFAULT_PROTECTED) is (suffix is not None)
    assert (name in PROTECTED) is (suffix is not None)


def test_suffix_set_longest_match_root_and_empty() -> None:
    """The longest suffix wins; the root covers everything; an empty set nothing."""
    s = answers.SuffixSet(["amazonaws.com", "S3.amazonaws.com."])
    assert s.matches("bucket.s3.amazonaws.com") == "s3.amazonaws.com"
    assert s.matches("ec2.amazonaws.com") == "amazonaws.com"
    root = answers.SuffixSet(["."])
    assert root.matches("anything.example") == ""
    assert root.matches("") == ""
    assert answers.is_under("x", root)
    assert answers.SuffixSet([]).matches("amazonaws.com") is None
    assert answers.is_under("a.example.com", "example.com")
    assert not answers.is_under("a.example.com", "ample.com")


def test_suffix_set_value_semantics() -> None:
    """Equal sets compare and hash equal; the set is immutable and prints sorted."""
    a = answers.SuffixSet(["b.example", "A.example."])
    assert a == answers.SuffixSet(["a.example", "b.example"])
    assert hash(a) == hash(answers.SuffixSet(["a.example", "b.example"]))
    assert str(a) == "a.example, b.example"
    assert list(a) == ["a.example", "b.example"] and len(a) == 2
    assert a.suffixes == frozenset({"a.example", "b.example"})
    with pytest.raises(AttributeError):
        a._set = frozenset()  # type: ignore[misc]
    with pytest.raises(TypeError):
        answers.SuffixSet("amazonaws.com")


# -- malformed input --------------------------------------------------------------------


def test_every_truncation_is_a_scan_error() -> None:
    """Cutting a valid response anywhere raises ScanError, never another exception."""
    wire = response(
        "files.corp.example.",
        "A",
        answer=[
            ("files.corp.example.", "CNAME", ("bucket.s3.amazonaws.com.",)),
            ("bucket.s3.amazonaws.com.", "A", ("52.219.1.1",)),
            ("bucket.s3.amazonaws.com.", "HTTPS", ("1 . ipv4hint=52.219.1.1 ipv6hint=2600::1",)),
        ],
        authority=[("amazonaws.com.", "NS", ("ns1.amazonaws.com.",))],
        additional=[("ns1.amazonaws.com.", "A", ("205.251.192.1",))],
        edns=True,
    )
    answers.scan_response(wire)
    for cut in range(len(wire)):
        with pytest.raises(answers.ScanError):
            answers.scan_response(wire[:cut])


def test_pointer_loops_are_scan_errors() -> None:
    """Self, forward and mutual compression pointers raise ScanError."""
    # The question name is a pointer to itself.
    with pytest.raises(answers.ScanError, match="pointer"):
        answers.scan_response(header(1, 0) + pointer(12) + b"\x00\x01\x00\x01")
    # A label then a pointer back to the label: a loop through the name's own start.
    with pytest.raises(answers.ScanError, match="pointer"):
        answers.scan_response(header(1, 0) + b"\x01a" + pointer(12) + b"\x00\x01\x00\x01")
    # A forward pointer in an owner name.
    q = wire_name("a.example.")
    with pytest.raises(answers.ScanError, match="pointer"):
        answers.scan_response(header(1, 1) + question(q) + record(pointer(200), 1, A_10))
    # Two owners pointing at each other (each is a pointer at the other's position).
    start = 12 + len(q) + 4
    rec1 = record(pointer(start + 16), 1, A_10)
    rec2 = record(pointer(start), 1, A_10)
    with pytest.raises(answers.ScanError, match="pointer"):
        answers.scan_response(header(1, 2) + question(q) + rec1 + rec2)


def test_too_many_pointer_hops_is_a_scan_error() -> None:
    """A chain of 200 pointers, each to the one before, is refused."""
    q = wire_name("a.example.")
    root = 12 + len(q) + 4 + 1 + 10  # the rdata of a root-owned record: a root name first
    at = [root + 1 + 2 * i for i in range(200)]  # then pointer i, to pointer i - 1 (or root)
    hops = b"\x00" + b"".join(pointer(at[i - 1] if i else root) for i in range(200))
    holder = record(b"\x00", 999, hops)  # an unknown type carries the pointers
    last = at[-1]
    wire = header(1, 2) + question(q) + holder + record(pointer(last), 1, A_10)
    with pytest.raises(answers.ScanError, match="too many"):
        answers.scan_response(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x12\x34\x81\x80",  # short header
        header(1, 0) + b"\x41" + b"a" * 0x41 + b"\x00\x00\x01\x00\x01",  # extended label type
        header(1, 0) + b"\x81ab\x00\x00\x01\x00\x01",  # 0x80 label type
        header(1, 1) + question(b"\x00") + record(b"\x00", 1, b"\x01\x02\x03\x04\x05"),  # A len 5
        header(1, 1) + question(b"\x00") + record(b"\x00", 28, A_10),  # AAAA len 4
        header(1, 1) + question(b"\x00") + record(b"\x00", 5, wire_name("x.") + b"zz"),  # CNAME
        header(1, 1) + question(b"\x00") + record(b"\x00", 65, b"\x00\x01\x00\x00\x04\x00\x03abc"),
        header(1, 1) + question(b"\x00") + record(b"\x00", 65, b"\x00\x01\x00\x00\x06\x00\x04abcd"),
        header(1, 1) + question(b"\x00") + record(b"\x00", 65, b"\x00\x01\x00\x00\x04\x00\x09abcd"),
        header(1, 1) + question(b"\x00") + record(b"\x00", 65, b"\x00"),
        header(1, 1) + question(b"\x00") + record(b"\x00", 65, b"\x00\x01\x03abc"),  # name overrun
        header(1, 0) + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63
        + b"\x3f" + b"d" * 63 + b"\x00\x00\x01\x00\x01",  # 257-byte name
    ],
)
def test_malformed_wire_is_a_scan_error(wire: bytes) -> None:
    """Bad headers, label types, rdata lengths, SvcParams and names raise ScanError."""
    with pytest.raises(answers.ScanError):
        answers.scan_response(wire)
    assert issubclass(answers.ScanError, ValueError)


def test_trailing_authority_overrun_is_a_scan_error() -> None:
    """An authority record whose rdata runs past the end is caught."""
    wire = header(1, 0, 1) + question(b"\x00") + record(b"\x00", 2, wire_name("ns.example."))
    answers.scan_response(wire)
    with pytest.raises(answers.ScanError):
        answers.scan_response(wire[:-3])


def test_escaped_characters_belong_to_their_label() -> None:
    """Names come as dnspython writes them: an escaped "." is part of its label, so
    a\\.amazonaws.com (two labels: "a.amazonaws" and "com") is not under amazonaws.com,
    the way the router and the wire-form judgement read it; an escaped backslash before a
    real dot is still a label boundary."""
    protected = answers.SuffixSet(["amazonaws.com"])
    assert protected.matches("a\\.amazonaws.com") is None
    assert protected.matches("x.y\\.z.amazonaws.com") == "amazonaws.com"
    assert protected.matches("a\\\\.amazonaws.com") == "amazonaws.com"
    assert protected.matches("a\\032b.amazonaws.com") == "amazonaws.com"
    assert protected.matches("notamazonaws.com") is None
