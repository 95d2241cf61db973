"""Wire helpers on real messages built with dnspython: query parsing, reply checks, OPT
handling, finishing replies for the client, truncation."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from forwarder.dns import names, wire
from forwarder.errors import DropPacket, FormError


def test_parse_query_reads_question_and_edns() -> None:
    q = dns.message.make_query("WWW.Example.COM", "AAAA", use_edns=0, payload=4096,
                               want_dnssec=True)
    q.flags |= dns.flags.CD
    p = wire.parse_query(q.to_wire())
    assert p.id == q.id
    assert p.qname == b"\x03www\x07example\x03com\x00"
    assert p.question[:4] == b"\x03WWW"
    assert (p.qtype, p.qclass) == (28, 1)
    assert p.edns and p.do and p.cd
    assert p.udp_size == wire.SERVER_UDP_SIZE  # never more than the forwarder advertises


def test_parse_query_without_edns_has_512() -> None:
    p = wire.parse_query(dns.message.make_query("a.example", "A").to_wire())
    assert not p.edns and p.udp_size == 512 and not p.do


def test_small_edns_buffer_is_raised_to_512() -> None:
    q = dns.message.make_query("a.example", "A", use_edns=0, payload=100)
    assert wire.parse_query(q.to_wire()).udp_size == 512


@pytest.mark.parametrize(("data", "kind"), [
    (b"\x00\x01", "short"),
    (dns.message.make_response(dns.message.make_query("a.example", "A")).to_wire(), "response"),
])
def test_dropped(data: bytes, kind: str) -> None:
    with pytest.raises(DropPacket) as info:
        wire.parse_query(data)
    assert info.value.kind == kind


def test_malformed_kinds() -> None:
    good = dns.message.make_query("a.example", "A").to_wire()
    with pytest.raises(FormError) as info:
        wire.parse_query(good[:-3])
    assert info.value.kind == "formerr"
    two = good[:4] + b"\x00\x02" + good[6:]
    with pytest.raises(FormError) as info:
        wire.parse_query(two)
    assert info.value.kind == "qdcount"
    pointer = good[:12] + b"\xc0\x0c" + good[-4:]
    with pytest.raises(FormError):
        wire.parse_query(pointer)
    q = dns.message.make_query("a.example", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    with pytest.raises(FormError) as info:
        wire.parse_query(q.to_wire())
    assert info.value.kind == "notimp"


def test_two_opt_records_are_formerr() -> None:
    q = dns.message.make_query("a.example", "A", use_edns=0).to_wire()
    opt = q[-11:]
    doubled = q[:10] + struct.pack("!H", 2) + q[12:] + opt
    with pytest.raises(FormError):
        wire.parse_query(doubled)


def test_upstream_query_has_new_id_and_our_opt() -> None:
    client = dns.message.make_query("a.example", "A", use_edns=0, payload=4096, want_dnssec=True)
    p = wire.parse_query(client.to_wire())
    out = dns.message.from_wire(wire.upstream_query(0x4242, p.flags, p.question, p.do))
    assert out.id == 0x4242
    assert out.payload == wire.UPSTREAM_UDP_SIZE and out.ednsflags & dns.flags.DO
    assert not out.options
    assert out.flags & dns.flags.RD


def test_reply_matches_checks_id_qr_and_question() -> None:
    q = dns.message.make_query("a.example", "A")
    r = dns.message.make_response(q)
    name = b"\x01a\x07example\x00"
    data = r.to_wire()
    assert wire.reply_matches(data, q.id, name, 1, 1)
    assert not wire.reply_matches(data, q.id ^ 1, name, 1, 1)
    assert not wire.reply_matches(data, q.id, name, 28, 1)
    assert not wire.reply_matches(data, q.id, b"\x01b\x07example\x00", 1, 1)
    assert not wire.reply_matches(q.to_wire(), q.id, name, 1, 1)  # not a response
    upper = dns.message.make_response(dns.message.make_query("A.EXAMPLE", "A"))
    upper.id = q.id
    assert wire.reply_matches(upper.to_wire(), q.id, name, 1, 1)


def test_finish_adds_opt_with_ede_and_keeps_case() -> None:
    q = dns.message.make_query("MiXeD.example", "A", use_edns=0, want_dnssec=True)
    p = wire.parse_query(q.to_wire())
    internal = wire.synth_reply(p.flags, p.qname + p.question[-4:], wire.Rcode.SERVFAIL)
    out = wire.finish(p.id, p.flags, p.question, True, True, 1232, internal, 2,
                      ((22, "no upstream"),))
    r = dns.message.from_wire(out)
    assert r.id == q.id and r.rcode() == dns.rcode.SERVFAIL
    assert r.question[0].name.to_text() == "MiXeD.example."
    assert r.ednsflags & dns.flags.DO and r.payload == wire.SERVER_UDP_SIZE
    assert [(o.code, o.text) for o in r.options] == [(22, "no upstream")]


def test_finish_truncates_keeping_question() -> None:
    q = dns.message.make_query("big.example", "TXT")
    resp = dns.message.make_response(q)
    resp.answer.append(dns.rrset.from_text("big.example.", 60, "IN", "TXT",
                                           *[f'"{"x" * 200}{i}"' for i in range(5)]))
    p = wire.parse_query(q.to_wire())
    out = wire.finish(p.id, p.flags, p.question, False, False, 512, resp.to_wire(), 0, None)
    r = dns.message.from_wire(out)
    assert len(out) <= 512
    assert r.flags & dns.flags.TC and r.answer == []
    assert r.question[0].name.to_text() == "big.example."
    whole = dns.message.from_wire(
        wire.finish(p.id, p.flags, p.question, False, False, 0, resp.to_wire(), 0, None))
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 5


def test_tcp_reply_never_outgrows_its_length_prefix() -> None:
    """Over TCP nothing truncates, but a reply that our OPT pushes past 65,535 bytes cannot
    be framed: it goes out truncated (question kept) instead of failing to send."""
    q = dns.message.make_query("big.example", "TXT", use_edns=0)
    p = wire.parse_query(q.to_wire())
    resp = dns.message.make_response(q)
    resp.use_edns(False)
    # 246 records of 266 bytes and one of 63: 65,531 bytes with the header and question
    texts = [f'"{"x" * 250}{i:03}"' for i in range(246)] + [f'"{"y" * 50}"']
    resp.answer.append(dns.rrset.from_text("big.example.", 60, "IN", "TXT", *texts))
    internal = resp.to_wire()
    assert wire.MAX_MESSAGE - 11 < len(internal) <= wire.MAX_MESSAGE
    out = wire.finish(p.id, p.flags, p.question, True, False, 0, internal, 0, None)
    r = dns.message.from_wire(out)
    assert len(out) <= wire.MAX_MESSAGE
    assert r.flags & dns.flags.TC and r.answer == []
    assert r.question[0].name.to_text() == "big.example."


@pytest.mark.parametrize(("text", "expected"), [
    ("Example.COM.", b"\x07example\x03com\x00"), (".", b"\x00"), ("", b"\x00")])
def test_text_to_name(text: str, expected: bytes) -> None:
    assert names.from_text(text) == expected
    assert names.to_text(expected) == (text.lower().rstrip(".") or ".")


@pytest.mark.parametrize("labels", [
    [b"x\n1999-01-01 forged", b"\x1b[31mred", b"com"],
    [b"a.b", b"back\\slash", b'"()@$;', b"sp ace", b"\x00\x7f\xff"],
    [b"plain-label_1", b"example"],
])
def test_name_to_text_escapes_as_dig_prints(labels: list[bytes]) -> None:
    """Names: the presentation form escapes what dig and dnspython escape (RFC 1035 5.1),
    has no control character, and reads back to the same wire name."""
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    text = names.to_text(name)
    assert text == dns.name.Name([*labels, b""]).to_text(omit_final_dot=True)
    assert all(0x20 < ord(c) < 0x7F for c in text)
    assert names.from_text(text) == name.lower()


def test_text_to_name_rejects_long_labels() -> None:
    with pytest.raises(ValueError):
        names.from_text("x" * 64 + ".example")


def test_qtype_text() -> None:
    assert wire.qtype_from_text("https") == 65
    assert wire.qtype_from_text("TYPE65280") == 65280
    assert wire.qtype_to_text(65280) == "TYPE65280"
    with pytest.raises(ValueError):
        wire.qtype_from_text("NOPE")


def test_truncated_reply_fits_even_with_long_ede_text() -> None:
    q = dns.message.make_query("x" * 60 + "." + "y" * 60 + ".example", "A", use_edns=0)
    p = wire.parse_query(q.to_wire())
    internal = wire.synth_reply(p.flags, p.qname + p.question[-4:], wire.Rcode.SERVFAIL)
    ede = ((15, "z" * 300), (3, "w" * 300))
    out = wire.finish(p.id, p.flags, p.question, True, False, 512, internal, 2, ede)
    r = dns.message.from_wire(out)
    assert len(out) <= 512 and r.flags & dns.flags.TC
