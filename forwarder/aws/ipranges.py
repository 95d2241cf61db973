"""AWS's published IP address ranges (ip-ranges.json): which service and region a public
address belongs to.

The file lists prefixes with a `service` (AMAZON, S3, EC2, CLOUDFRONT, ...) and a `region`.
AMAZON covers every AWS address, so a more specific service wins; among those the longest
prefix. `load` reads the file once per change (path, size and modification time), so a
runtime rebuilt after an inventory refresh does not read it again.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from typing import Any

GENERIC = "AMAZON"


class IpRangesError(ValueError):
    """The file cannot be read or is not in AWS's ip-ranges.json format."""


@dataclass(frozen=True, slots=True)
class Range:
    prefix: str
    service: str
    region: str

    def describe(self, address: str, *more: str) -> str:
        """`52.219.150.28 is in AWS's published S3 range for ap-northeast-1 (52.219.128.0/17)`
        (`A and B are in ...` with *more* addresses in the same range)."""
        service = "AWS" if self.service == GENERIC else self.service
        where = "" if self.region == "GLOBAL" else f" for {self.region}"
        which = f"{', '.join((address, *more[:-1]))} and {more[-1]} are" if more else \
            f"{address} is"
        return f"{which} in AWS's published {service} range{where} ({self.prefix})"


class IpRanges:
    """The prefixes of one ip-ranges.json, looked up by address."""

    def __init__(self, data: Any, source: str) -> None:
        self.source = source
        self.sync_token = ""
        # (version, prefix length) -> network address -> ranges
        self._by_length: dict[tuple[int, int], dict[int, list[Range]]] = {}
        try:
            self.sync_token = str(data.get("syncToken", ""))
            items = [(p["ip_prefix"], p) for p in data["prefixes"]]
            items += [(p["ipv6_prefix"], p) for p in data.get("ipv6_prefixes", [])]
            for text, p in items:
                net = ipaddress.ip_network(text, strict=False)
                key = (net.version, net.prefixlen)
                entry = Range(str(net), str(p["service"]), str(p["region"]))
                self._by_length.setdefault(key, {}).setdefault(
                    int(net.network_address), []).append(entry)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise IpRangesError(f"{source}: not AWS's ip-ranges.json format "
                                f"({e.__class__.__name__}: {e})") from None
        self._lengths = sorted(self._by_length, key=lambda k: -k[1])

    def __len__(self) -> int:
        return sum(len(v) for by in self._by_length.values() for v in by.values())

    def prefixes(self, service: str, region: str) -> tuple[str, ...]:
        """The prefixes published for *service* (as the file names it: S3, DYNAMODB) in
        *region*, IPv4 first, in address order."""
        found = {ipaddress.ip_network(r.prefix) for by in self._by_length.values()
                 for ranges in by.values() for r in ranges
                 if r.service == service and r.region == region}
        return tuple(str(n) for n in sorted(found, key=lambda n: (n.version, n)))

    def lookup(self, address: str) -> Range | None:
        """The range that best names *address*'s service, or None outside AWS's ranges."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        bits = ip.max_prefixlen
        value = int(ip)
        generic = None
        for version, length in self._lengths:
            if version != ip.version:
                continue
            network = value >> (bits - length) << (bits - length)
            for r in self._by_length[(version, length)].get(network, ()):
                if r.service != GENERIC:
                    return r
                generic = generic or r
        return generic


_loaded: dict[str, tuple[tuple[int, int], IpRanges]] = {}


def load(path: str) -> IpRanges:
    """The ranges in the file at *path* (read again only when it changed). Raises
    IpRangesError."""
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
        cached = _loaded.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise IpRangesError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise IpRangesError(f"{path}: not JSON: {e}") from None
    ranges = IpRanges(data, path)
    _loaded[path] = (stamp, ranges)
    return ranges
