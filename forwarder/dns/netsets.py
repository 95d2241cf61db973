"""Sets of IP networks with fast membership tests on raw and textual addresses.

This module owns `NetworkSet`, the one type the answer policy (which networks an
answer may point into) and the ACL stage (which clients may ask) use to test
addresses.

Membership works on integers: each family's networks are merged into sorted,
disjoint ``[start, end]`` ranges and a lookup is one `bisect` (O(log n)), with no
`ipaddress` object built per test. IPv6 addresses that carry an IPv4 address,
IPv4-mapped (``::ffff:0:0/96``) and the NAT64 well-known prefix (``64:ff9b::/96``,
RFC 6052), are judged by that IPv4 address: ``::ffff:52.219.1.1`` and
``64:ff9b::34db:101`` both reach 52.219.1.1, so both are as public as it is.
Python's ``is_private``/``is_global`` are deliberately not used: the operator's
list is the whole truth.
"""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable, Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The first 12 bytes of IPv6 addresses that embed an IPv4 address in their last 4.
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96 (RFC 4291)
_NAT64_WKP_PREFIX = b"\x00\x64\xff\x9b" + bytes(8)  # 64:ff9b::/96 (RFC 6052)

_from_bytes = int.from_bytes
_bisect_right = bisect.bisect_right
_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6


def _merge(networks: Iterable[IPNetwork]) -> tuple[list[int], list[int]]:
    """Return sorted, disjoint (starts, ends) covering *networks*, adjacent ranges joined."""
    ranges = sorted(
        (int(n.network_address), int(n.broadcast_address)) for n in networks
    )
    starts: list[int] = []
    ends: list[int] = []
    for start, end in ranges:
        if ends and start <= ends[-1] + 1:
            if end > ends[-1]:
                ends[-1] = end
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


class NetworkSet:
    """An immutable set of IPv4 and IPv6 networks; answers "is this address inside?".

    Build one with `NetworkSet.parse` from configuration text, or directly from
    `ipaddress` network objects. ``str()`` lists the networks as given,
    comma-separated, for error texts.
    """

    __slots__ = ("_networks", "_v4_ends", "_v4_starts", "_v6_ends", "_v6_starts")

    _networks: tuple[IPNetwork, ...]
    _v4_starts: list[int]
    _v4_ends: list[int]
    _v6_starts: list[int]
    _v6_ends: list[int]

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        unique: dict[IPNetwork, None] = dict.fromkeys(networks)  # ordered de-duplication
        for net in unique:
            if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise TypeError(f"not an IP network: {net!r}")
        nets = tuple(unique)
        v4s, v4e = _merge(n for n in nets if n.version == 4)
        v6s, v6e = _merge(n for n in nets if n.version == 6)
        setter = object.__setattr__  # the class refuses attribute assignment
        setter(self, "_networks", nets)
        setter(self, "_v4_starts", v4s)
        setter(self, "_v4_ends", v4e)
        setter(self, "_v6_starts", v6s)
        setter(self, "_v6_ends", v6e)

    @classmethod
    def parse(cls, items: Iterable[str]) -> NetworkSet:
        """Build a set from texts such as ``10.0.0.0/8``, ``fc00::/7`` or ``192.0.2.1``.

        A bare address means a single host (/32 or /128).

        Raises:
            ValueError: an item is not a network, or has host bits set
                (``10.0.0.1/8``); the message names the item.
        """
        if isinstance(items, str | bytes):
            raise ValueError(f"expected a list of networks, got {items!r}")
        nets: list[IPNetwork] = []
        for item in items:
            if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                nets.append(item)
                continue
            if not isinstance(item, str):
                raise ValueError(f"invalid network {item!r}: expected text such as 10.0.0.0/8")
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=True))
            except ValueError as e:
                raise ValueError(f"invalid network {item!r}: {e}") from None
        return cls(nets)

    # -- membership -------------------------------------------------------------------

    def contains_packed(self, packed: bytes) -> bool:
        """Answer whether a 4- or 16-byte address (as on the wire) is inside the set.

        IPv4-mapped and NAT64 (64:ff9b::/96) addresses are tested as their IPv4
        address first; an IPv6 network the operator listed that covers them also
        counts.

        Raises:
            ValueError: *packed* is neither 4 nor 16 bytes long.
        """
        size = len(packed)
        if size == 4:
            x = _from_bytes(packed, "big")
            i = _bisect_right(self._v4_starts, x)
            return i > 0 and x <= self._v4_ends[i - 1]
        if size != 16:
            raise ValueError(f"address must be 4 or 16 bytes, got {size}")
        head = packed[:12]
        if head == _V4_MAPPED_PREFIX or head == _NAT64_WKP_PREFIX:  # noqa: SIM109  (no tuple)
            x = _from_bytes(packed[12:], "big")
            i = _bisect_right(self._v4_starts, x)
            if i > 0 and x <= self._v4_ends[i - 1]:
                return True
        x = _from_bytes(packed, "big")
        i = _bisect_right(self._v6_starts, x)
        return i > 0 and x <= self._v6_ends[i - 1]

    def contains(self, address: str | bytes | IPAddress) -> bool:
        """Answer whether *address* (text, packed bytes or `ipaddress` object) is inside.

        Text may carry an IPv6 zone (``fe80::1%eth0``), as socket peer names do.

        Raises:
            ValueError: *address* is not an IP address.
        """
        if isinstance(address, str):
            return self.contains_packed(pack_address(address))
        if isinstance(address, bytes):
            return self.contains_packed(address)
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return self.contains_packed(address.packed)
        raise ValueError(f"not an IP address: {address!r}")

    def __contains__(self, address: object) -> bool:
        try:
            return self.contains(address)  # type: ignore[arg-type]
        except ValueError:
            return False

    # -- value behaviour ----------------------------------------------------------------

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        """The networks as given, duplicates removed."""
        return self._networks

    def __iter__(self) -> Iterator[IPNetwork]:
        return iter(self._networks)

    def __len__(self) -> int:
        return len(self._networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NetworkSet):
            return NotImplemented
        return (self._v4_starts, self._v4_ends, self._v6_starts, self._v6_ends) == (
            other._v4_starts, other._v4_ends, other._v6_starts, other._v6_ends
        )

    def __hash__(self) -> int:
        return hash((tuple(self._v4_starts), tuple(self._v4_ends),
                     tuple(self._v6_starts), tuple(self._v6_ends)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"NetworkSet is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"NetworkSet is immutable; cannot delete {name!r}")

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self._networks)

    def __repr__(self) -> str:
        return f"NetworkSet.parse([{', '.join(repr(str(n)) for n in self._networks)}])"


def pack_address(text: str) -> bytes:
    """Return the 4- or 16-byte form of an IPv4 or IPv6 address text (zone dropped).

    Strict: ``10.1`` or ``010.0.0.1`` are not addresses (inet_pton rules).

    Raises:
        ValueError: *text* is not an IP address.
    """
    try:
        if ":" in text:
            zone = text.find("%")
            return _inet_pton(_AF_INET6, text if zone < 0 else text[:zone])
        return _inet_pton(_AF_INET, text)
    except (OSError, TypeError):
        raise ValueError(f"not an IP address: {text!r}") from None


def in_networks(address: str | bytes | IPAddress, networks: NetworkSet) -> bool:
    """Answer whether *address* lies in *networks*; a bad address is simply outside.

    Meant for checks such as client ACLs where an unparsable peer must be refused,
    not raise.
    """
    try:
        return networks.contains(address)
    except ValueError:
        return False

