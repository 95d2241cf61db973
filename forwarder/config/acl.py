"""The `acl` section and the open-resolver guard.

The rule: the networks in `acl.allow`, taken together (however they are split), may
admit at most a /8's worth of public IPv4 addresses (2^24) and a /32's worth of public
IPv6 addresses (2^96, one ISP's usual allocation); more is an open resolver and an error
unless `acl.open_resolver: true`. Public IPv4 is everything but the special-purpose
blocks that are not globally reachable, multicast and reserved space (RFC 6890); public
IPv6 is global unicast (2000::/3) but documentation space. IPv6 prefixes that carry IPv4
addresses (::ffff:0:0/96, 64:ff9b::/96) count as the IPv4 addresses they carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import forwarder.config.model as model
from forwarder.config.values import Reader, network_list

V4_BOUND = 2**24  # a /8
V6_BOUND = 2**96  # a /32

NOT_PUBLIC_V4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)
PUBLIC_V6 = ("2000::/3",)
NOT_PUBLIC_V6 = ("2001:db8::/32", "3fff::/20")  # documentation (RFC 3849, RFC 9637)
CARRY_V4 = ("::ffff:0:0/96", "64:ff9b::/96")  # IPv4-mapped, NAT64 well-known prefix

Range = tuple[int, int]  # first and last address, as integers

KEYS = {"allow", "open_resolver"}


def parse(top: Reader) -> tuple[model.Network, ...]:
    r = Reader(top.problems, top.at("acl"), top.data.get("acl"), KEYS)
    if not r.has("allow"):
        return tuple(ipaddress.ip_network(n) for n in model.DEFAULT_ACL)
    networks = tuple(network_list(r.items("allow"), r.problems, model.DEFAULT_ACL))
    if not r.boolean("open_resolver", False):
        why = open_resolver(networks)
        if why:
            r.fail("allow", f"{why}; anyone could use it, for reflection attacks too: list "
                            "your clients' networks, or set acl.open_resolver: true if that "
                            "is really wanted")
    return networks


def open_resolver(networks: Iterable[model.Network]) -> str | None:
    """Why *networks* together make an open resolver, or None when they do not."""
    admitted = [(n, _admits(n)) for n in networks]
    for family in (1, 0):  # IPv6 first: ::/1 + 8000::/1 admits all of it, and IPv4 mapped
        space, excluded, bound, size = FAMILIES[family]
        public = _public([r for _, ranges in admitted for r in ranges[family]], space, excluded)
        if public > bound:
            wide = [str(n) for n, ranges in admitted if _public(ranges[family], space, excluded)]
            listed = ", ".join(wide[:4]) + (", ..." if len(wide) > 4 else "")
            share = _share(public, _size(space) - _size(excluded))
            one = len(wide) == 1
            return (f"{listed} make{'s' if one else ''} this an open resolver: "
                    f"{'it admits' if one else 'together they admit'} {share} of the public "
                    f"IPv{4 if family == 0 else 6} Internet, more than a {size}'s worth")
    return None


def _admits(network: model.Network) -> tuple[list[Range], list[Range]]:
    """The IPv4 and IPv6 ranges a client in *network* can come from (an IPv6 prefix that
    carries IPv4 addresses admits those IPv4 addresses too)."""
    whole = _range(network)
    if network.version == 4:
        return [whole], []
    carried = [(lo - base, hi - base) for base, top in map(_range_of, CARRY_V4)
               for lo, hi in _intersect([whole], [(base, top)])]
    return carried, [whole]


def _public(ranges: list[Range], space: list[Range], excluded: list[Range]) -> int:
    inside = _intersect(_merge(ranges), space)
    return _size(inside) - _size(_intersect(inside, excluded))


def _share(part: int, whole: int) -> str:
    percent = 100 * part / whole
    return f"{percent:.0f}%" if percent >= 10 else f"{percent:.2g}%"


def _range(network: model.Network) -> Range:
    return int(network.network_address), int(network.broadcast_address)


def _range_of(text: str) -> Range:
    return _range(ipaddress.ip_network(text))


def _merge(ranges: Iterable[Range]) -> list[Range]:
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _intersect(a: list[Range], b: list[Range]) -> list[Range]:
    return [(max(lo, blo), min(hi, bhi)) for lo, hi in a for blo, bhi in b
            if max(lo, blo) <= min(hi, bhi)]


def _size(ranges: list[Range]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


# by family (IPv4, IPv6): the public space, the parts of it that are not public, the
# bound, the bound as a prefix
FAMILIES = (
    ([(0, 2**32 - 1)], _merge(map(_range_of, NOT_PUBLIC_V4)), V4_BOUND, "/8"),
    (_merge(map(_range_of, PUBLIC_V6)), _merge(map(_range_of, NOT_PUBLIC_V6)), V6_BOUND, "/32"),
)
