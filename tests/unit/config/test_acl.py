"""The open-resolver guard judges what `acl.allow` admits as a whole: more than a /8's
worth of public IPv4 or a /32's worth of public IPv6, however it is split, is refused
unless `acl.open_resolver: true`."""

from __future__ import annotations

import ipaddress

import pytest

from forwarder import config
from forwarder.config import acl
from forwarder.errors import ConfigError

ADVICE = ("; anyone could use it, for reflection attacks too: list your clients' networks, "
          "or set acl.open_resolver: true if that is really wanted")


def text(allow: list[str], open_resolver: bool = False) -> str:
    items = ", ".join(f"'{n}'" for n in allow)
    flag = "\n  open_resolver: true" if open_resolver else ""
    return f"zones: [{{match: ., action: refuse}}]\nacl:\n  allow: [{items}]{flag}\n"


def refusal(allow: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load_text(text(allow), "f.yaml")
    return info.value.lines()


@pytest.mark.parametrize(("allow", "expected"), [
    (["0.0.0.0/1", "128.0.0.0/1"],
     "0.0.0.0/1, 128.0.0.0/1 make this an open resolver: together they admit 100% of the "
     "public IPv4 Internet, more than a /8's worth"),
    (["::/1", "8000::/1"],  # 8000::/1 holds no global unicast space: ::/1 is enough
     "::/1 makes this an open resolver: it admits 100% of the public IPv6 Internet, more "
     "than a /32's worth"),
    (["2000::/3"],
     "2000::/3 makes this an open resolver: it admits 100% of the public IPv6 Internet, "
     "more than a /32's worth"),
    (["::ffff:0:0/96"],  # IPv4-mapped: every IPv4 client of a dual-stack socket
     "::ffff:0:0/96 makes this an open resolver: it admits 100% of the public IPv4 "
     "Internet, more than a /8's worth"),
    ([f"{n}.0.0.0/8" for n in (1, 2, 3)] + ["default"],  # three /8s, listed one by one
     "1.0.0.0/8, 2.0.0.0/8, 3.0.0.0/8 make this an open resolver: together they admit "
     "1.4% of the public IPv4 Internet, more than a /8's worth"),
    (["0.0.0.0/5", "224.0.0.0/3"],  # 0/8 is not public, 224/3 is multicast and reserved,
     # but 1.0.0.0-7.255.255.255 is seven /8s
     "0.0.0.0/5 makes this an open resolver: it admits 3.2% of the public IPv4 Internet, "
     "more than a /8's worth"),
    (["0.0.0.0/0"],
     "0.0.0.0/0 makes this an open resolver: it admits 100% of the public IPv4 Internet, "
     "more than a /8's worth"),
])
def test_split_and_wide_ranges_are_refused(allow: list[str], expected: str) -> None:
    assert refusal(allow) == [f"f.yaml:3:10: acl.allow: {expected}{ADVICE}"]


@pytest.mark.parametrize("allow", [
    ["default"],
    ["default", "203.0.113.0/24"],
    ["17.0.0.0/8"],  # one organisation's /8: exactly the bound
    ["224.0.0.0/3", "0.0.0.0/8", "198.18.0.0/15"],  # multicast, reserved, special-purpose
    ["2a00:1450::/32", "2001:db8::/32"],  # an ISP's /32; documentation space is not public
    ["fc00::/7", "fe80::/10", "::1/128"],
])
def test_private_and_bounded_public_ranges_pass(allow: list[str]) -> None:
    cfg = config.load_text(text(allow), "f.yaml")
    assert cfg.acl


@pytest.mark.parametrize("allow", [["0.0.0.0/1", "128.0.0.0/1"], ["::/1", "8000::/1"],
                                   ["2000::/3"], ["::/0", "0.0.0.0/0"]])
def test_open_resolver_true_accepts_them(allow: list[str]) -> None:
    cfg = config.load_text(text(allow, open_resolver=True), "f.yaml")
    assert [str(n) for n in cfg.acl] == allow


def test_the_bound_is_exact() -> None:
    """A /8 of public IPv4 passes and one address more does not; the same for a /32 of
    IPv6."""
    v4 = [ipaddress.ip_network("17.0.0.0/8")]
    assert acl.open_resolver(v4) is None
    assert acl.open_resolver([*v4, ipaddress.ip_network("18.0.0.0/32")])
    v6 = [ipaddress.ip_network("2a00:1450::/32")]
    assert acl.open_resolver(v6) is None
    assert acl.open_resolver([*v6, ipaddress.ip_network("2a00:1451::/128")])
