"""The AWS inventory: what discovery found, as frozen values, and its state file.

An `Inventory` holds, for each account and region read, the Interface endpoints (service,
VPC, private DNS on/off and its options, DNS entries, ENI addresses with their subnet and
Availability Zone), the Gateway endpoints, the private DNS names of the endpoint services
the Interface endpoints use (AWS services and PrivateLink services alike), the Route 53
Resolver inbound endpoints with their addresses, and the AWS-managed prefix lists of the
services with Gateway endpoints (the addresses a Gateway endpoint's routes carry). It is
read whole and replaced whole.

The state file is the inventory as JSON (`to_json`/`from_json`), written atomically after
every successful read and read at start when the AWS API cannot be reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = 1  # the state file's format version
AVAILABLE = "available"  # an endpoint's state when it carries traffic


class StateFileError(Exception):
    """The state file cannot be read, or does not hold an inventory of this format."""


@dataclass(frozen=True, slots=True)
class Address:
    """One private address of an endpoint, with where it lives."""

    ip: str
    subnet: str
    az: str = ""  # the Availability Zone; empty when the subnet could not be read


@dataclass(frozen=True, slots=True)
class InterfaceEndpoint:
    id: str
    account: str
    region: str
    service: str  # the endpoint service name: com.amazonaws.REGION.s3, com.amazonaws.vpce...
    vpc: str
    state: str
    private_dns: bool
    dns_record_ip_type: str = ""  # DnsOptions: ipv4 | dualstack | ipv6 | service-defined
    private_dns_only_for_inbound: bool = False  # DnsOptions (S3 beside a Gateway endpoint)
    dns_names: tuple[str, ...] = ()  # DNS entries: regional first, then zonal
    addresses: tuple[Address, ...] = ()  # the ENIs' private addresses

    @property
    def usable(self) -> bool:
        return self.state.lower() == AVAILABLE and bool(self.addresses)


@dataclass(frozen=True, slots=True)
class GatewayEndpoint:
    id: str
    account: str
    region: str
    service: str
    vpc: str
    state: str


@dataclass(frozen=True, slots=True)
class EndpointService:
    """An endpoint service an Interface endpoint uses, with its private DNS names."""

    name: str
    region: str
    owner: str = ""  # "amazon" for AWS services, else the provider's account
    private_dns_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InboundEndpoint:
    id: str
    name: str
    account: str
    region: str
    vpc: str
    status: str
    addresses: tuple[Address, ...] = ()

    @property
    def zones(self) -> tuple[str, ...]:
        """The Availability Zones its addresses are in (unknown ones left out)."""
        return tuple(sorted({a.az for a in self.addresses if a.az}))


@dataclass(frozen=True, slots=True)
class PrefixList:
    """An AWS-managed prefix list (`com.amazonaws.REGION.s3`): the networks a VPC's route
    tables send to its Gateway endpoint for that service. The same in every account."""

    id: str
    name: str
    region: str
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scope:
    """One account and region that was read."""

    account: str
    region: str


@dataclass(frozen=True, slots=True)
class Inventory:
    fetched_at: float  # Unix time of the read
    scopes: tuple[Scope, ...] = ()
    interface: tuple[InterfaceEndpoint, ...] = ()
    gateway: tuple[GatewayEndpoint, ...] = ()
    services: tuple[EndpointService, ...] = ()
    inbound: tuple[InboundEndpoint, ...] = ()
    prefix_lists: tuple[PrefixList, ...] = ()
    source: str = field(default="api", compare=False)  # "api" or "state_file"

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.fetched_at)

    def service(self, name: str) -> EndpointService | None:
        return next((s for s in self.services if s.name == name), None)

    def inbound_endpoint(self, key: str) -> InboundEndpoint | None:
        """The inbound endpoint with ID *key*, else the one named *key*."""
        for e in self.inbound:
            if e.id == key:
                return e
        return next((e for e in self.inbound if e.name == key), None)

    def counts(self) -> dict[str, int]:
        return {"interface": len(self.interface), "gateway": len(self.gateway),
                "inbound": len(self.inbound)}

    def same_contents(self, other: Inventory | None) -> bool:
        """Answers whether *other* found the same things (whenever and however read)."""
        return other is not None and (self.scopes, self.interface, self.gateway,
                                      self.services, self.inbound, self.prefix_lists) == (
            other.scopes, other.interface, other.gateway, other.services, other.inbound,
            other.prefix_lists)

    def prefix_list(self, name: str) -> PrefixList | None:
        """The AWS-managed prefix list called *name* (`com.amazonaws.REGION.s3`)."""
        return next((p for p in self.prefix_lists if p.name == name), None)


# --- the state file ----------------------------------------------------------------------------


def to_json(inv: Inventory) -> str:
    data = asdict(inv)
    data.pop("source")
    return json.dumps({"format": FORMAT, **data}, indent=1, sort_keys=True) + "\n"


def from_json(text: str, source: str = "state_file") -> Inventory:
    """The inventory in *text*. Raises StateFileError."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateFileError(f"not an inventory of format {FORMAT}")

        def addresses(items: list[dict[str, Any]]) -> tuple[Address, ...]:
            return tuple(Address(**a) for a in items)

        return Inventory(
            fetched_at=float(data["fetched_at"]),
            scopes=tuple(Scope(**s) for s in data["scopes"]),
            interface=tuple(
                InterfaceEndpoint(**{**e, "dns_names": tuple(e["dns_names"]),
                                     "addresses": addresses(e["addresses"])})
                for e in data["interface"]),
            gateway=tuple(GatewayEndpoint(**e) for e in data["gateway"]),
            services=tuple(EndpointService(**{**s, "private_dns_names":
                                               tuple(s["private_dns_names"])})
                           for s in data["services"]),
            inbound=tuple(InboundEndpoint(**{**e, "addresses": addresses(e["addresses"])})
                          for e in data["inbound"]),
            # a state file written before prefix lists were read has none
            prefix_lists=tuple(PrefixList(**{**p, "cidrs": tuple(p["cidrs"])})
                               for p in data.get("prefix_lists", [])),
            source=source,
        )
    except StateFileError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise StateFileError(f"not a valid inventory: {e.__class__.__name__}: {e}") from None


def read_state(path: str) -> Inventory:
    """The inventory saved at *path*. Raises StateFileError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise StateFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return from_json(text)
    except StateFileError as e:
        raise StateFileError(f"{path}: {e}") from None


def write_state(path: str, inv: Inventory) -> None:
    """Saves *inv* at *path* atomically (a crash leaves the old file or the new one, never
    half of one). Raises OSError."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".aws-inventory.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(to_json(inv))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
