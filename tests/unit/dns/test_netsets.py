"""Tests for forwarder.dns.netsets: NetworkSet parsing, membership and the policy defaults."""

from __future__ import annotations

import ipaddress
import random

import pytest

from forwarder.config import model
from forwarder.dns import netsets

ALLOWED = netsets.NetworkSet.parse(model.DEFAULT_ALLOWED)


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("10.0.0.0", True),
        ("10.255.255.255", True),
        ("9.255.255.255", False),
        ("11.0.0.0", False),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("192.169.0.1", False),
        ("100.64.0.1", True),  # RFC 6598 shared address space is allowed
        ("100.127.255.255", True),
        ("100.128.0.1", False),  # just past 100.64.0.0/10
        ("52.219.1.1", False),  # S3 public
        ("93.184.216.34", False),
        # Not in the list, though Python's is_private says "private": the list rules.
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("192.0.2.1", False),
        ("fc00::1", True),
        ("fd12:3456::1", True),
        ("fe80::1", False),
        ("2600::1", False),
        ("::1", False),
        ("::", False),
        # IPv4 inside IPv6 is judged as the IPv4 address it reaches.
        ("::ffff:10.0.0.1", True),
        ("::ffff:52.219.1.1", False),
        ("64:ff9b::a00:1", True),  # NAT64 of 10.0.0.1
        ("64:ff9b::34db:101", False),  # NAT64 of 52.219.1.1
        ("64:ff9b::6440:1", True),  # NAT64 of 100.64.0.1
        ("64:ff9b:1::a00:1", False),  # local-use NAT64 prefix: not decoded, not listed
    ],
)
def test_default_allowed_membership(address: str, inside: bool) -> None:
    """DEFAULT_ALLOWED: RFC 1918, RFC 6598 and ULA, by text, bytes and ipaddress object."""
    ip = ipaddress.ip_address(address)
    assert ALLOWED.contains(address) is inside
    assert ALLOWED.contains_packed(ip.packed) is inside
    assert ALLOWED.contains(ip) is inside
    assert (address in ALLOWED) is inside
    assert netsets.in_networks(address, ALLOWED) is inside


def test_defaults() -> None:
    """The defaults are the five allowed networks and the four AWS service suffixes."""
    assert str(ALLOWED) == "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7"
    assert model.DEFAULT_PROTECTED == (
        "amazonaws.com",
        "amazonaws.com.cn",
        "api.aws",
        "api.amazonwebservices.com.cn",
    )
    assert len(ALLOWED) == 5


def test_parse_bare_address_is_a_host() -> None:
    """A bare address is a /32 or /128."""
    s = netsets.NetworkSet.parse(["192.0.2.7", "2001:db8::7"])
    assert str(s) == "192.0.2.7/32, 2001:db8::7/128"
    assert s.contains("192.0.2.7") and not s.contains("192.0.2.8")
    assert s.contains("2001:db8::7") and not s.contains("2001:db8::8")


@pytest.mark.parametrize(
    ("items", "named"),
    [
        (["10.0.0.0/8", "banana"], "'banana'"),
        (["10.0.0.1/8"], "'10.0.0.1/8'"),  # host bits set: most likely a typo
        (["10.0.0.0/33"], "'10.0.0.0/33'"),
        ([42], "42"),
        ([None], "None"),
        ("10.0.0.0/8", "'10.0.0.0/8'"),  # one string, not a list
    ],
)
def test_parse_errors_name_the_item(items: object, named: str) -> None:
    """NetworkSet.parse: ValueError whose text names the bad item."""
    with pytest.raises(ValueError, match=r"invalid network|expected a list") as info:
        netsets.NetworkSet.parse(items)  # type: ignore[arg-type]
    assert named in str(info.value)


def test_overlapping_and_adjacent_networks_merge() -> None:
    """Overlapping and adjacent networks behave as their union; str keeps them as given."""
    s = netsets.NetworkSet.parse(["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "10.1.0.0/16"])
    assert str(s) == "10.0.0.0/9, 10.128.0.0/9, 10.1.0.0/16"
    for addr in ("10.0.0.0", "10.127.255.255", "10.128.0.0", "10.255.255.255", "10.1.2.3"):
        assert s.contains(addr)
    assert not s.contains("11.0.0.0")
    assert not s.contains("9.255.255.255")


def test_explicit_ipv6_network_covering_nat64_counts() -> None:
    """An operator who lists 64:ff9b::/96 itself allows every NAT64 address."""
    s = netsets.NetworkSet.parse(["64:ff9b::/96"])
    assert s.contains("64:ff9b::34db:101")
    assert not s.contains("52.219.1.1")


def test_mapped_addresses_match_ipv4_networks_only_by_decoding() -> None:
    """An IPv4-only set matches ::ffff:a.b.c.d and 64:ff9b::a.b.c.d, not other IPv6."""
    s = netsets.NetworkSet.parse(["52.219.0.0/16"])
    assert s.contains("::ffff:52.219.1.1")
    assert s.contains("64:ff9b::52.219.1.1")
    assert not s.contains("::52.219.1.1")  # deprecated IPv4-compatible form: not decoded
    assert not s.contains("2600::34db:101")


def test_contains_text_forms() -> None:
    """Text with an IPv6 zone works (peer names carry one); malformed text raises."""
    s = netsets.NetworkSet.parse(["fe80::/10", "127.0.0.0/8"])
    assert s.contains("fe80::1%eth0")
    assert s.contains("127.0.0.1")
    for bad in ("10.1", "010.0.0.1", "localhost", "", "1.2.3.4.5", "::g"):
        with pytest.raises(ValueError, match="not an IP address"):
            s.contains(bad)
        assert bad not in s
        assert netsets.in_networks(bad, s) is False


def test_contains_packed_rejects_other_lengths() -> None:
    """Only 4- and 16-byte addresses are addresses."""
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        ALLOWED.contains_packed(b"\x0a\x00\x00")
    assert b"\x0a\x00\x00" not in ALLOWED
    assert 10 not in ALLOWED


def test_empty_set_contains_nothing() -> None:
    """An empty set is falsy and holds no address."""
    s = netsets.NetworkSet.parse([])
    assert not s
    assert str(s) == ""
    assert not s.contains("10.0.0.1")
    assert not s.contains("::ffff:10.0.0.1")


def test_value_semantics() -> None:
    """Equal sets compare and hash equal regardless of order; the set is immutable."""
    a = netsets.NetworkSet.parse(["10.0.0.0/8", "fc00::/7"])
    b = netsets.NetworkSet.parse(["fc00::/7", "10.0.0.0/8"])
    assert a == b and hash(a) == hash(b)
    assert a != netsets.NetworkSet.parse(["10.0.0.0/8"])
    assert list(a) == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fc00::/7")]
    assert a.networks == tuple(a)
    assert "NetworkSet.parse" in repr(a)
    with pytest.raises(AttributeError):
        a._networks = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.extra = 1  # type: ignore[attr-defined]


def test_agrees_with_ipaddress_on_random_addresses() -> None:
    """Membership equals a brute-force ipaddress check over random networks and addresses."""
    rng = random.Random(7)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for _ in range(40):
        if rng.random() < 0.5:
            nets.append(ipaddress.ip_network((rng.getrandbits(32), rng.randint(4, 32)), False))
        else:
            nets.append(ipaddress.ip_network((rng.getrandbits(128), rng.randint(8, 128)), False))
    s = netsets.NetworkSet(nets)
    for _ in range(3000):
        if rng.random() < 0.5:
            addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                rng.getrandbits(32)
            )
        else:
            addr = ipaddress.IPv6Address(rng.getrandbits(128))
        if rng.random() < 0.5:  # aim near a network so that both answers are common
            net = rng.choice(nets)
            try:
                addr = net.network_address + rng.randrange(min(net.num_addresses * 2, 2**32))
            except ValueError:  # ran off the end of the address space
                continue
        expected = any(addr in n for n in nets if n.version == addr.version)
        assert s.contains_packed(addr.packed) is expected, addr
