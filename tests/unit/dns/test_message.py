"""Tests for forwarder.dns.message: records read from and written to internal replies."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder.dns import message, wire
from forwarder.dns.message import Record
from forwarder.query import Query


def make_query(name: str = "WwW.Example.COM", qtype: str = "A") -> Query:
    m = dns.message.make_query(name, qtype, use_edns=0)
    return Query.from_wire(m.to_wire(), ("127.0.0.1", 5300), "udp", 0.0)


def client_view(q: Query, reply_wire: bytes, rcode: int = 0) -> dns.message.Message:
    """What a client would receive for this internal reply."""
    data = wire.finish(q.id, q.flags, q.question, q.edns, q.do, 0, reply_wire, rcode, ())
    return dns.message.from_wire(data)


RECORDS = [
    Record("www.example.com", "A", 60, "10.0.0.1"),
    Record("www.example.com", "AAAA", 60, "2001:db8::1"),
    Record("www.example.com", "CNAME", 5, "target.example.net"),
    Record("www.example.com", "TXT", 60, '"hello \\"world\\"" "\\255\\000x"'),
    Record("www.example.com", "MX", 300, "10 mail.example.com."),
    Record("www.example.com", "TYPE65000", 1, "\\# 3 0a0b0c"),
    Record("www.example.com", "HTTPS", 30, "1 . alpn=h2 ipv4hint=192.0.2.7"),
]


def test_records_round_trip_through_the_wire() -> None:
    """Every record written into an answer reads back as the same Record."""
    q = make_query()
    data = message.build_answer(q, RECORDS)
    assert list(message.parse_sections(data).answer) == RECORDS


def test_answer_keeps_the_clients_question_and_flags() -> None:
    """The question section is the client's bytes (letter case kept); RD and CD copied."""
    q = make_query("WwW.Example.COM")
    data = message.build_answer(q, [Record("www.example.com", "A", 60, "10.0.0.1")], rcode=0)
    msg = client_view(q, data)
    assert msg.question[0].name.to_text() == "WwW.Example.COM."
    assert msg.id == q.id
    assert msg.answer[0][0].address == "10.0.0.1"
    assert msg.flags & dns.flags.RD


def test_answer_with_rcode_and_authority() -> None:
    q = make_query("gone.example.com")
    soa = Record("example.com", "SOA", 60, "ns.example.com. host.example.com. 1 2 3 4 60")
    data = message.build_answer(q, [], rcode=3, authority=[soa])
    msg = client_view(q, data, rcode=3)
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.authority[0].rdtype == dns.rdatatype.SOA
    assert message.parse_sections(data).authority == (soa,)


def test_plain_txt_text_is_one_string_split_every_255_bytes() -> None:
    q = make_query(qtype="TXT")
    long_text = "x" * 300
    data = message.build_answer(q, [message.to_record(("t.example", "TXT", 5, long_text))])
    strings = client_view(q, data).answer[0][0].strings
    assert strings == (b"x" * 255, b"x" * 45)


@pytest.mark.parametrize(("item", "error"), [
    (("a.example", "A", 60, "10.0.0.999"), ValueError),
    (("a.example", "AAAA", 60, "10.0.0.1"), ValueError),
    (("a.example", "A", -1, "10.0.0.1"), ValueError),
    (("a.example", "A", True, "10.0.0.1"), ValueError),
    (("a" * 64 + ".example", "A", 60, "10.0.0.1"), ValueError),
    (("a.example", "NOSUCHTYPE", 60, "x"), ValueError),
    (("a.example", "A", 60), TypeError),
    ("a.example A 60 10.0.0.1", TypeError),
    (("a.example", "CNAME", 60, "bad..name"), ValueError),
    (("a.example", "TXT", 60, '"unterminated'), ValueError),
    (("a.example", "TYPE65000", 60, "\\# 2 0a"), ValueError),
])
def test_bad_records_are_rejected_with_a_reason(item: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        message.to_rr(message.to_record(item))


def test_type_given_as_number_or_lower_case_text() -> None:
    assert message.to_record(("a.example", 28, 5, "2001:db8::1")).type == "AAAA"
    assert message.to_record(("a.example", "txt", 5, "x")).type == "TXT"


@pytest.mark.parametrize(("value", "code"), [
    ("NXDOMAIN", 3), ("nxdomain", 3), ("REFUSED", 5), ("RCODE11", 11), (2, 2), ("BADVERS", 16),
])
def test_rcode_from_text_or_number(value: object, code: int) -> None:
    assert message.rcode_from(value) == code


@pytest.mark.parametrize("value", ["NOPE", 4096, -1, None, 1.5])
def test_bad_rcodes(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        message.rcode_from(value)


def test_rcode_text() -> None:
    assert message.rcode_to_text(0) == "NOERROR"
    assert message.rcode_to_text(12) == "RCODE12"


def test_unparsable_reply_raises_value_error() -> None:
    with pytest.raises(ValueError):
        message.parse_sections(b"\x00\x00\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03abc")
