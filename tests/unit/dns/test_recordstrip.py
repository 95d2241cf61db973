"""recordstrip: whole records removed from a reply's wire (by its index) with counts and
compression pointers fixed (the fast path), the dnslib rebuild when a pointer would
dangle, and mutated messages that must strip to valid wire or fail cleanly."""

from __future__ import annotations

import struct

import dns.message
import pytest

from forwarder.dns import recordstrip
from forwarder.dns.reply import read
from forwarder.errors import FormError
from tests.unit.dns.test_reply import (
    A_10,
    A_52,
    chain,
    header,
    judge,
    parsed_answer,
    pointer,
    question,
    record,
    response,
    texts,
    w,
    wire_name,
)


def test_strip_fast_path_mixed_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip the public A records; the private ones, the question and EDNS stay."""
    monkeypatch.setattr(recordstrip, "_rebuild", _no_rebuild)
    wire = response(
        "s3.amazonaws.com.",
        answer=[("s3.amazonaws.com.", "A", ("52.219.1.1", "10.0.0.1", "52.219.1.2"))],
        edns=True,
    )
    index = read(wire)
    verdict = judge(wire)
    out = recordstrip.strip_records(index, verdict.violations)
    msg = dns.message.from_wire(out)
    assert parsed_answer(out) == ["s3.amazonaws.com. A 10.0.0.1"]
    assert str(msg.question[0].name) == "s3.amazonaws.com."
    assert len(out) == len(index.wire) - 32
    assert not judge(out).violations


def test_strip_fast_path_moves_later_pointers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records after the removed one whose names point past it still read right."""
    monkeypatch.setattr(recordstrip, "_rebuild", _no_rebuild)
    wire = response(
        "svc.amazonaws.com.",
        "HTTPS",
        answer=[
            ("svc.amazonaws.com.", "HTTPS", ("1 . alpn=h2 ipv4hint=52.219.1.1",)),
            ("svc.amazonaws.com.", "CNAME", ("vpce-1.svc.vpce.amazonaws.com.",)),
            ("vpce-1.svc.vpce.amazonaws.com.", "A", ("10.0.0.7",)),  # owner points at rdata above
            ("vpce-1.svc.vpce.amazonaws.com.", "TXT", ('"kept"',)),
        ],
        authority=[("vpce.amazonaws.com.", "NS", ("ns.svc.vpce.amazonaws.com.",))],
        additional=[("ns.svc.vpce.amazonaws.com.", "AAAA", ("fd00::53",))],
    )
    verdict = judge(wire)
    assert [a.rtype for a in verdict.violations] == [65]
    out = recordstrip.strip_records(read(wire), verdict.violations)
    msg = dns.message.from_wire(out)
    assert parsed_answer(out) == [
        "svc.amazonaws.com. CNAME vpce-1.svc.vpce.amazonaws.com.",
        "vpce-1.svc.vpce.amazonaws.com. A 10.0.0.7",
        'vpce-1.svc.vpce.amazonaws.com. TXT "kept"',
    ]
    assert str(msg.authority[0]) == "vpce.amazonaws.com. 60 IN NS ns.svc.vpce.amazonaws.com."
    assert str(msg.additional[0]) == "ns.svc.vpce.amazonaws.com. 60 IN AAAA fd00::53"


def test_strip_whole_https_record_and_additional(monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTPS record with a bad hint goes whole (once); additional addresses go; OPT stays."""
    monkeypatch.setattr(recordstrip, "_rebuild", _no_rebuild)
    name = "bucket.s3.ap-northeast-1.amazonaws.com."
    wire = response(
        name,
        "HTTPS",
        answer=[(name, "HTTPS", ("1 . alpn=h2 ipv4hint=52.219.1.1,52.219.1.2 ipv6hint=2600::1",)),
                (name, "A", ("10.0.0.5",))],
        additional=[("ns1.example.net.", "A", ("192.0.2.1",)),
                    ("ns1.example.net.", "AAAA", ("2001:db8::1",))],
        edns=True,
    )
    verdict = judge(wire)
    assert len(verdict.violations) == 3  # three hints, one record
    out = recordstrip.strip_records(read(wire), verdict.violations + verdict.additional)
    msg = dns.message.from_wire(out)
    assert parsed_answer(out) == [f"{name} A 10.0.0.5"]
    assert msg.additional == []
    assert struct.unpack("!4H", out[4:12]) == (1, 1, 0, 0)  # (read took the OPT out)


def test_strip_fallback_when_a_pointer_targets_a_removed_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kept owner pointing into a removed record's owner: the message is rebuilt."""
    calls: list[int] = []
    real = recordstrip._rebuild

    def spy(index: object, drop: list) -> bytes:  # type: ignore[type-arg]
        calls.append(len(drop))
        return real(index, drop)  # type: ignore[arg-type]

    monkeypatch.setattr(recordstrip, "_rebuild", spy)
    q = wire_name("q.example.")
    first = 12 + len(q) + 4
    https = b"\x00\x01\x00" + b"\x00\x04\x00\x04" + A_52  # HTTPS 1 . ipv4hint=52.219.1.1
    wire = (
        header(1, 4, 0, 1)
        + question(q)
        + record(wire_name("x.amazonaws.com."), 1, A_52)  # literal owner, removed
        + record(pointer(first), 1, A_10)  # owner points into the removed record
        + record(pointer(first + 2), 65, https)  # "amazonaws.com", inside it too
        + record(pointer(12), 16, b"\x04kept")
        + record(b"\x00", 41, b"")  # OPT
    )
    index = read(wire)
    addresses = index.addresses()
    assert [a.owner for a in addresses] == [w("x.amazonaws.com"), w("x.amazonaws.com"),
                                            w("amazonaws.com")]
    out = recordstrip.strip_records(index, [addresses[0]])
    assert calls == [1]
    assert parsed_answer(out) == [
        "x.amazonaws.com. A 10.0.0.1",
        'amazonaws.com. HTTPS 1 . ipv4hint="52.219.1.1"',
        'q.example. TXT "kept"',
    ]
    assert texts(read(out).addresses()) == ["10.0.0.1", "52.219.1.1"]


def test_strip_nothing_and_foreign_addresses() -> None:
    """No addresses: the same wire; an address from another message: FormError."""
    wire = response("a.example.", answer=[("a.example.", "A", ("10.0.0.1",))])
    index = read(wire)
    assert recordstrip.strip_records(index, []) is index.wire
    other = read(response("bb.example.", answer=[("bb.example.", "A", ("10.0.0.1", "10.0.0.2"))]))
    with pytest.raises(FormError, match="no record"):
        recordstrip.strip_records(index, [other.addresses()[1]])


def test_strip_every_address_leaves_a_valid_message() -> None:
    """Stripping all addresses of a CNAME answer keeps the CNAME and a consistent header."""
    wire = response(
        "files.corp.example.",
        answer=[
            ("files.corp.example.", "CNAME", ("bucket.s3.amazonaws.com.",)),
            ("bucket.s3.amazonaws.com.", "A", ("52.219.1.1", "52.219.1.2")),
        ],
    )
    index = read(wire)
    out = recordstrip.strip_records(index, index.addresses())
    assert parsed_answer(out) == ["files.corp.example. CNAME bucket.s3.amazonaws.com."]
    assert chain(read(out)) == chain(index)


def _no_rebuild(index: object, drop: list) -> bytes:  # type: ignore[type-arg]
    raise AssertionError("the fast path should not need a rebuild")


def test_mutated_messages_read_or_fail_cleanly_and_strip_to_valid_wire() -> None:
    """Random byte flips: FormError or an index; a stripped message dnspython can read.

    Whatever `read` accepts, dnspython reads too; the output of strip_records (fast path
    or dnslib rebuild) must read as well and hold exactly the input's records minus the
    removed ones.
    """
    import collections
    import random

    def records(msg: dns.message.Message) -> collections.Counter[tuple[str, str, int, str]]:
        return collections.Counter(
            (section, str(rrset.name).lower(), rrset.rdtype, rd.to_text())
            for section, rrsets in (("an", msg.answer), ("ns", msg.authority),
                                    ("ar", msg.additional))
            for rrset in rrsets
            for rd in rrset
        )

    base = response(
        "svc.amazonaws.com.",
        "HTTPS",
        answer=[
            ("svc.amazonaws.com.", "HTTPS", ("1 . alpn=h2 ipv4hint=52.219.1.1",)),
            ("svc.amazonaws.com.", "CNAME", ("vpce-1.svc.vpce.amazonaws.com.",)),
            ("vpce-1.svc.vpce.amazonaws.com.", "A", ("10.0.0.7", "52.1.1.1")),
            ("vpce-1.svc.vpce.amazonaws.com.", "MX", ("10 mx.svc.vpce.amazonaws.com.",)),
        ],
        authority=[("vpce.amazonaws.com.", "SOA", ("ns.svc.vpce.amazonaws.com. h.x. 1 2 3 4 5",))],
        additional=[("ns.svc.vpce.amazonaws.com.", "AAAA", ("fd00::53",)),
                    ("mx.svc.vpce.amazonaws.com.", "A", ("1.1.1.1",))],
        edns=True,
    )
    rng = random.Random(20261122)
    checked = 0
    for _ in range(400):
        wire = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
        try:
            index = read(bytes(wire))
        except FormError:
            continue
        before = dns.message.from_wire(index.wire)  # what read accepts, dnspython reads
        if len(before.question) != 1 or any(rrset.rdtype in (24, 30) for rrset in before.authority):
            continue  # SIG/NXT: dnspython leaves their names compressed, we do not
        drop = [a for a in index.addresses() + index.addresses(3) if rng.random() < 0.6]
        try:
            out = recordstrip.strip_records(index, drop)
        except FormError:
            continue  # dnslib could not rebuild a mangled message: refused, not corrupted
        after = dns.message.from_wire(out)
        gone = records(before) - records(after)
        assert not records(after) - records(before)
        assert sum(gone.values()) == len({a.start for a in drop})
        checked += 1
    assert checked > 100


# Found by fuzzing (tests/e2e/test_fuzz_upstream.py): replies whose records of an obsolete
# name type (MD 3, MB 7, MR 9: opaque to the reader, as to dnspython) hold no name; removing
# another record walked "names" in them past the end of the message (IndexError, SERVFAIL
# as an internal error).
FUZZED_OPAQUE_NAME_TYPES = [
    "6cb1810000010002000000010566313239340273330e61702d6e6f727468656173742d3109616d617a6f6e"
    "61777303636f6d00000f0001c00c001000010000012c00130b763d73706631202d616c6c067365636f6e64"
    "c00c0007000100002e2c001026001fa00000000000000000000000010000292000000000000000",
    "b22f810000010002000000010566323539370273330e61702d6e6f727468656173742d3109616d617a6f6e"
    "61777303636f6d0000010001c00c000500010000012c0002c012c012000300010000012c000434db010200"
    "00296000000000000000",
    "876e810000010002000000010566343436390273330e61702d6e6f727468656173742d3109616d617a6f6e"
    "61777303636f6d0000410001c00c000500010000012c0002c012c012000900010000012c000434db010200"
    "00292000000000000000",
]


@pytest.mark.parametrize("hexwire", FUZZED_OPAQUE_NAME_TYPES)
def test_removing_a_record_beside_opaque_name_type_data(hexwire: str) -> None:
    """Removing any one record of these replies leaves a message dnspython reads, the
    opaque records unchanged."""
    data = bytes.fromhex(hexwire)
    index = read(data, 12 + data[12:].index(b"\x00") + 1 + 4)
    for rec in index.records:
        out = recordstrip.remove(index, [rec])
        msg = dns.message.from_wire(out)
        kept = sum(len(rrset) for section in msg.sections[1:] for rrset in section)
        assert kept == len(index.records) - 1
