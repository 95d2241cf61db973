"""Padding of encrypted queries (RFC 8467) and the SPKI digest that `sha256/` pins name."""

from __future__ import annotations

import base64
import hashlib

import dns.edns
import dns.message
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from forwarder.dns import names, wire
from forwarder.upstream.transports import base, secure


def test_padding_reaches_a_multiple_of_128_and_stays_a_valid_query() -> None:
    for name in ("a.example", "a-much-longer-name.under.several.labels.example.com"):
        qname = names.from_text(name)
        query = wire.upstream_query(0x1234, wire.RD, wire.question_of(qname, 1, 1), True)
        padded = base.pad(query)
        assert len(padded) % 128 == 0
        msg = dns.message.from_wire(padded)
        assert msg.id == 0x1234 and msg.question[0].name.to_text() == name + "."
        (option,) = msg.options
        assert option.otype == dns.edns.PADDING
        assert msg.ednsflags & dns.flags.DO  # the DO bit survives


def test_a_query_on_a_block_boundary_gets_a_whole_block_of_nothing_more() -> None:
    query = bytes(124 - 11) + wire.upstream_query(0, 0, b"", False)[-11:]
    assert len(base.pad(query)) == 128


def test_spki_digest_matches_cryptography() -> None:
    for cert in (trustme.CA().issue_cert("dns.test", "127.0.0.1"),
                 trustme.CA(key_type=trustme.KeyType.RSA).issue_cert("x.test")):
        pem = cert.cert_chain_pems[0].bytes()
        parsed = x509.load_pem_x509_certificate(pem)
        spki = parsed.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        der = parsed.public_bytes(serialization.Encoding.DER)
        assert secure.spki_sha256(der) == hashlib.sha256(spki).digest()
        assert base64.b64encode(secure.spki_sha256(der))


def test_unreadable_certificate_is_a_value_error() -> None:
    try:
        secure.spki_sha256(b"\x30\x82")
    except ValueError:
        return
    raise AssertionError("no ValueError")
