"""Tests for forwarder.dns.reply and forwarder.dns.index: one reading of a reply (every
name, count and record checked; anything dnspython would refuse is refused) and what its
index answers (chain, names, addresses); and the policy's judgement made from the index.

Responses are real wire messages built with dnspython, or hand-assembled where a test
needs a compression layout dnspython would never write.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import dns.edns
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from forwarder.config import model
from forwarder.dns import names, netsets
from forwarder.dns.index import MAX_CHAIN, Address, Index
from forwarder.dns.reply import read
from forwarder.errors import FormError
from forwarder.stages.policy import judge as judging

PROTECTED = names.SuffixTable((s, s) for s in model.DEFAULT_PROTECTED)
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


def judge(wire: bytes) -> judging.Judgement:
    return judging.judge(read(wire), PROTECTED, ALLOWED)


def texts(addresses: Sequence[Address]) -> list[str]:
    return [a.text for a in addresses]


def w(text: str) -> bytes:
    """The lower-case wire form of a presentation name."""
    return names.from_text(text)


def chain(index: Index) -> list[str]:
    return [names.to_text(n) for n in index.chain()]


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


# -- reading and the index ------------------------------------------------------------


def test_read_simple_answer() -> None:
    """Question, rcode, chain and each A record with the byte range of its record."""
    wire = response(
        "S3.AP-Northeast-1.AmazonAWS.com.",
        answer=[("s3.ap-northeast-1.amazonaws.com.", "A", ("52.219.1.1", "10.0.0.1"))],
    )
    index = read(wire)
    assert index.qname() == w("s3.ap-northeast-1.amazonaws.com")  # lower-cased
    assert index.rcode == 0 and index.ancount == 2 and index.plain
    assert chain(index) == ["s3.ap-northeast-1.amazonaws.com"]
    addresses = index.addresses()
    assert texts(addresses) == ["52.219.1.1", "10.0.0.1"]
    assert index.addresses(3) == []
    first, second = addresses
    assert first.owner == w("s3.ap-northeast-1.amazonaws.com")
    assert (first.rtype, first.section, first.packed) == (1, 1, A_52)
    # The range is the whole record: owner pointer (2) + fixed part (10) + rdata (4).
    assert first.end - first.start == second.end - second.start == 16
    assert second.start == first.end and second.end == len(wire)
    assert wire[first.start : first.end].endswith(A_52)


def test_read_aaaa_and_rcode_and_root() -> None:
    """AAAA addresses; the rcode and negative TTL; the root name."""
    wire = response("example.org.", "AAAA", answer=[("example.org.", "AAAA", ("2600::1",))])
    index = read(wire)
    assert texts(index.addresses()) == ["2600::1"]
    assert index.addresses()[0].rtype == 28 and len(index.addresses()[0].packed) == 16
    nx = read(response("nope.example.", rcode=3, authority=[("example.", "SOA", (
        "ns.example. host.example. 1 2 3 4 5",))]))
    assert (nx.rcode, nx.addresses(), chain(nx), nx.negative) == (3, [], ["nope.example"], 5)
    root = read(response(".", "NS", answer=[(".", "NS", ("a.root-servers.net.",))]))
    assert (root.qname(), chain(root)) == (b"\x00", ["."])


def test_read_takes_out_the_opt_record_and_keeps_its_ede_and_rcode() -> None:
    """The OPT record goes (ARCOUNT lowered); its Extended DNS Errors and the extended
    rcode (BADVERS, 16) stay on the index."""
    q = dns.message.make_query("x.example.", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.use_edns(0, options=[dns.edns.EDEOption(15, "blocked upstream")])
    r.set_rcode(16)
    r.answer.append(dns.rrset.from_text("x.example.", 60, "IN", "A", "10.0.0.1"))
    index = read(r.to_wire())
    assert index.rcode == 16 and index.ede == ((15, "blocked upstream"),)
    again = dns.message.from_wire(index.wire)
    assert again.edns < 0 and [rr.to_text() for rr in again.answer[0]] == ["10.0.0.1"]


def test_read_keeps_the_other_additional_records() -> None:
    q = dns.message.make_query("a.example", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.1"))
    r.additional.append(dns.rrset.from_text("ns.example.", 60, "IN", "A", "192.0.2.53"))
    r.use_edns(0, options=[dns.edns.EDEOption(15, "blocked upstream")])
    out = read(r.to_wire())
    parsed = dns.message.from_wire(out.wire)
    assert parsed.edns == -1
    assert len(parsed.answer) == 1 and len(parsed.additional) == 1
    assert out.ede == ((15, "blocked upstream"),)
    assert out.rcode == 0


def test_read_folds_the_extended_rcode() -> None:
    q = dns.message.make_query("a.example", "A", use_edns=0)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.BADVERS)
    assert read(r.to_wire()).rcode == 16


def test_read_https_and_svcb_hints() -> None:
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
    index = read(wire)
    addresses = index.addresses()
    assert texts(addresses) == ["52.219.1.1", "10.0.0.9", "2600::1", "10.0.0.53"]
    https = addresses[:3]
    assert {(a.rtype, a.start, a.end) for a in https} == {(65, https[0].start, https[0].end)}
    assert addresses[3].rtype == 64 and addresses[3].owner == w("_dns.resolver.example")
    assert not index.plain  # hints: the policy reads the whole answer
    assert w("dot.example") in index.answer_names()  # an SVCB target is a name it leads to
    assert w("target.example") in index.answer_names()
    verdict = judging.judge(index, PROTECTED, ALLOWED)
    assert verdict.protected_name == w("bucket.s3.ap-northeast-1.amazonaws.com")
    assert texts(verdict.violations) == ["52.219.1.1", "2600::1"]


def test_read_additional_section() -> None:
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
    index = read(wire)
    assert index.addresses() == []
    extra = index.addresses(3)
    assert texts(extra) == ["192.0.2.1", "2001:db8::1"]
    assert all(a.section == 3 for a in extra)
    assert [a.owner for a in extra] == [w("ns1.example.com")] * 2
    assert not index.plain


def test_addresses_skip_other_classes_and_types() -> None:
    """Only class IN A/AAAA (and HTTPS/SVCB hints) are addresses; a CHAOS TXT, an MX or
    an A of class ANY are not."""
    q = wire_name("x.example.")
    wire = (
        header(1, 3)
        + question(q)
        + record(pointer(12), 16, b"\x03abc", rclass=3)  # TXT CH
        + record(pointer(12), 15, b"\x00\x0a" + pointer(12))  # MX
        + record(pointer(12), 1, A_52, rclass=255)  # A in class ANY: not an address
    )
    index = read(wire)
    assert index.addresses() == []
    assert chain(index) == ["x.example"]


def test_names_match_dnspython() -> None:
    """Names with escapes, long labels and mixed case read as dnspython reads them."""
    texts_ = [
        "a\\.b.example.",
        "sp\\032ace.example.",
        "qu\\\"ote.Example.",
        "\\000nul.example.",
        "MiXeD.CaSe.Example.",
        "x" * 40 + ".bucket-" + "y" * 55 + ".s3.amazonaws.com.",
        "-.0.9.z.example.",
        "_tcp.*.example.",
    ]
    for text in texts_:
        wire = response(text, answer=[(text, "A", ("10.0.0.1",))])
        index = read(wire)
        expected = dns.name.from_text(text).to_wire().lower()  # only A-Z are lowered
        assert index.qname() == expected, text
        assert index.addresses()[0].owner == expected, text


def test_read_follows_a_name_through_several_pointers() -> None:
    """A pointer to a name that itself ends in a pointer reads whole."""
    q = wire_name("www.example.com.")  # at 12; "example.com" at 16
    an1 = wire_name("mail.")[:-1] + pointer(16)  # mail.example.com
    off2 = 12 + len(q) + 4
    wire = header(1, 2) + question(q) + record(an1, 1, A_10)
    wire += record(b"\x02db" + pointer(off2), 1, A_52)  # db.mail.example.com
    index = read(wire)
    assert [a.owner for a in index.addresses()] == [w("mail.example.com"),
                                                   w("db.mail.example.com")]


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
    index = read(wire)
    assert chain(index) == ["files.corp.example", "bucket.s3.ap-northeast-1.amazonaws.com"]
    verdict = judging.judge(index, PROTECTED, ALLOWED)
    assert verdict.protected_name == w("bucket.s3.ap-northeast-1.amazonaws.com")
    assert verdict.suffix == "amazonaws.com"
    assert texts(verdict.violations) == ["52.219.1.1"]


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
    assert chain(read(wire)) == ["x.amazonaws.com", "y.cdn.example", "z.amazonaws.com"]
    assert verdict.protected_name == w("x.amazonaws.com")
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
    assert verdict.protected_name == w("s3.amazonaws.com")
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
    assert chain(read(wire)) == ["a.example", "b.example", "c.example"]


def test_chain_loop_stops() -> None:
    """a CNAME b CNAME a: the chain stops at the loop."""
    wire = response(
        "a.example.",
        answer=[("a.example.", "CNAME", ("b.example.",)), ("b.example.", "CNAME", ("a.example.",))],
    )
    assert chain(read(wire)) == ["a.example", "b.example"]


def test_chain_hop_limit() -> None:
    """At most 16 CNAMEs are followed; a protected name past the limit is not in the chain."""
    hops = [(f"h{i}.example.", "CNAME", (f"h{i + 1}.example.",)) for i in range(20)]
    hops.append(("h20.example.", "CNAME", ("far.amazonaws.com.",)))
    wire = response("h0.example.", answer=hops)
    index = read(wire)
    assert len(index.chain()) == 1 + MAX_CHAIN
    assert chain(index)[-1] == "h16.example"
    assert judging.judge(index, PROTECTED, ALLOWED).protected_name is None


def test_dname_target_is_a_name_the_answer_leads_to() -> None:
    """A DNAME into a protected suffix makes the answer judged, as its CNAME would."""
    wire = response(
        "a.corp.example.",
        answer=[
            ("corp.example.", "DNAME", ("s3.amazonaws.com.",)),
            ("a.corp.example.", "CNAME", ("a.s3.amazonaws.com.",)),
            ("a.s3.amazonaws.com.", "A", ("52.219.1.1",)),
        ],
    )
    index = read(wire)
    assert w("s3.amazonaws.com") in index.answer_names()
    assert texts(judge(wire).violations) == ["52.219.1.1"]


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
    assert verdict.protected_name == w("s3.amazonaws.com")
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
    assert verdict.protected_name == (w(protected_name) if protected_name else None)
    assert texts(verdict.violations) == violations


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
    assert bool(verdict.violations) is violation


def test_judge_lists_additional_addresses_only_for_protected_names() -> None:
    """A protected answer's additional-section addresses are listed (the policy removes
    them all, allowed or not); an unprotected answer is not judged at all."""
    add = [("ns.amazonaws.com.", "A", ("205.251.192.1", "10.0.0.2"))]
    protected = judge(
        response("s3.amazonaws.com.", answer=[("s3.amazonaws.com.", "A", ("10.0.0.1",))],
                 additional=add)
    )
    assert not protected.violations  # the answer section is fine
    assert texts(protected.additional) == ["205.251.192.1", "10.0.0.2"]
    plain = judge(
        response("www.example.com.", answer=[("www.example.com.", "A", ("10.0.0.1",))],
                 additional=add)
    )
    assert plain.protected_name is None and plain.additional == ()


def test_judge_with_operator_sets() -> None:
    """Custom protected suffixes and allowed networks replace the defaults."""
    index = read(response("internal.example.com.",
                          answer=[("internal.example.com.", "A", ("203.0.113.10", "10.0.0.1"))]))
    protected = names.SuffixTable([("example.com", "example.com")])
    allowed = netsets.NetworkSet.parse(["203.0.113.0/24"])
    verdict = judging.judge(index, protected, allowed)
    assert verdict.protected_name == w("internal.example.com")
    assert texts(verdict.violations) == ["10.0.0.1"]
    assert judging.judge(index, names.SuffixTable(), allowed).protected_name is None


# -- malformed input: refused as dnspython refuses it -----------------------------------


def refused_by_dnspython(wire: bytes) -> bool:
    try:
        dns.message.from_wire(wire)
    except Exception:
        return True
    return False


def test_every_truncation_is_a_form_error() -> None:
    """Cutting a valid response anywhere raises FormError, never another exception."""
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
    read(wire)
    for cut in range(len(wire)):
        with pytest.raises(FormError):
            read(wire[:cut])


def test_bytes_after_the_last_record_are_a_form_error() -> None:
    """Nothing may follow the last record (dnspython: TrailingJunk)."""
    wire = response("x.example.", answer=[("x.example.", "A", ("10.0.0.1",))])
    read(wire)
    with pytest.raises(FormError, match="after the last record"):
        read(wire + b"\x00")


def test_pointer_loops_are_form_errors() -> None:
    """Self, forward and mutual compression pointers raise FormError."""
    # The question name is a pointer to itself.
    with pytest.raises(FormError, match="pointer"):
        read(header(1, 0) + pointer(12) + b"\x00\x01\x00\x01")
    # A label then a pointer back to the label: a loop through the name's own start.
    with pytest.raises(FormError, match="pointer"):
        read(header(1, 0) + b"\x01a" + pointer(12) + b"\x00\x01\x00\x01")
    # A forward pointer in an owner name.
    q = wire_name("a.example.")
    with pytest.raises(FormError, match="pointer"):
        read(header(1, 1) + question(q) + record(pointer(200), 1, A_10))
    # Two owners pointing at each other (each is a pointer at the other's position).
    start = 12 + len(q) + 4
    rec1 = record(pointer(start + 16), 1, A_10)
    rec2 = record(pointer(start), 1, A_10)
    with pytest.raises(FormError, match="pointer"):
        read(header(1, 2) + question(q) + rec1 + rec2)


def test_a_pointer_into_the_name_it_is_in_is_a_form_error() -> None:
    """An owner "b" + pointer to its own first label: backwards, but into itself."""
    q = wire_name("a.example.")
    start = 12 + len(q) + 4
    wire = header(1, 1) + question(q) + record(b"\x01b" + pointer(start), 1, A_10)
    assert refused_by_dnspython(wire)
    with pytest.raises(FormError):
        read(wire)


def test_too_many_pointer_hops_is_a_form_error() -> None:
    """A chain of 200 pointers, each to the one before, is refused (dnspython allows 16)."""
    q = wire_name("a.example.")
    root = 12 + len(q) + 4 + 1 + 10  # the rdata of a root-owned record: a root name first
    at = [root + 1 + 2 * i for i in range(200)]  # then pointer i, to pointer i - 1 (or root)
    hops = b"\x00" + b"".join(pointer(at[i - 1] if i else root) for i in range(200))
    holder = record(b"\x00", 999, hops)  # an unknown type carries the pointers
    last = at[-1]
    wire = header(1, 2) + question(q) + holder + record(pointer(last), 1, A_10)
    assert refused_by_dnspython(wire)
    with pytest.raises(FormError, match="more than 16"):
        read(wire)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x12\x34\x81\x80",  # short header
        header(1, 0) + b"\x41" + b"a" * 0x41 + b"\x00\x00\x01\x00\x01",  # extended label type
        header(1, 0) + b"\x81ab\x00\x00\x01\x00\x01",  # 0x80 label type
        header(1, 1) + question(b"\x00") + record(b"\x00", 1, b"\x01\x02\x03\x04\x05"),  # A len 5
        header(1, 1) + question(b"\x00") + record(b"\x00", 1, b"\x01\x02\x03"),  # A len 3
        header(1, 1) + question(b"\x00") + record(b"\x00", 28, A_10),  # AAAA len 4
        header(1, 1) + question(b"\x00") + record(b"\x00", 5, wire_name("x.") + b"zz"),  # CNAME
        header(1, 1) + question(b"\x00") + record(b"\x00", 65, b"\x00\x01\x03abc"),  # name overrun
        header(1, 0) + b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63
        + b"\x3f" + b"d" * 63 + b"\x00\x00\x01\x00\x01",  # 257-byte name
        # an OPT record in the answer section, one not owned by the root, and two of them
        header(1, 1) + question(b"\x00") + record(b"\x00", 41, b""),
        header(1, 0, 0, 1) + question(wire_name("a.")) + record(pointer(12), 41, b""),
        header(1, 0, 0, 2) + question(b"\x00") + record(b"\x00", 41, b"") * 2,
        header(1, 0, 0, 1) + question(b"\x00") + record(b"\x00", 250, b"", rclass=255),  # TSIG
        header(1, 2) + question(b"\x00") + record(b"\x00", 1, A_10),  # fewer records than counted
    ],
)
def test_malformed_wire_is_a_form_error(wire: bytes) -> None:
    """Bad headers, label types, rdata lengths, names, OPT and TSIG placement and counts
    raise FormError; dnspython refuses each of these messages too."""
    assert refused_by_dnspython(wire)
    with pytest.raises(FormError):
        read(wire)


def test_authority_overrun_is_a_form_error() -> None:
    """An authority record whose rdata runs past the end is caught."""
    wire = header(1, 0, 1) + question(b"\x00") + record(b"\x00", 2, wire_name("ns.example."))
    read(wire)
    with pytest.raises(FormError):
        read(wire[:-3])


def test_escaped_characters_belong_to_their_label() -> None:
    """Names are matched in wire form: an escaped "." is part of its label, so
    a\\.amazonaws.com (two labels: "a.amazonaws" and "com") is not under amazonaws.com."""
    for text, protected in (("a\\.amazonaws.com.", False), ("x.y\\.z.amazonaws.com.", True),
                            ("a\\032b.amazonaws.com.", True), ("notamazonaws.com.", False)):
        index = read(response(text, answer=[(text, "A", ("52.219.1.1",))]))
        assert (judging.judge(index, PROTECTED, ALLOWED).protected_name is not None) \
            is protected, text
