"""Why a protected name got a public address, in words: parts of the text the answer policy
adds to a violation's EDE and log line (aws/advice.py puts them in order).

Two parts, each when known:

- with `aws.ip_ranges`, which AWS service and region the public address is in
  ("52.219.150.28 is in AWS's published S3 range for ap-northeast-1 (52.219.128.0/17)");
- with an inventory, the cause, from the endpoints of the name's service and region in the
  VPCs of the inbound endpoints the upstream group forwards to ("vpc-0abc has an S3
  Gateway endpoint (vpce-...), which does not change DNS; on-premises clients need an S3
  Interface endpoint").

`situation` (what one VPC has for one service) is shared with `checks`.
"""

from __future__ import annotations

from dataclasses import dataclass

from forwarder.aws import ipranges, services
from forwarder.aws.inventory import GatewayEndpoint, InboundEndpoint, InterfaceEndpoint, Inventory
from forwarder.aws.ipranges import IpRanges, Range
from forwarder.config import model, source
from forwarder.errors import ConfigError, ConfigProblem

_SHOWN = 2  # addresses described


@dataclass(frozen=True, slots=True)
class Situation:
    """What one VPC has for one service in one region."""

    vpc: str
    service: str
    interface: tuple[InterfaceEndpoint, ...]
    gateway: tuple[GatewayEndpoint, ...]

    @property
    def gateway_only(self) -> bool:
        return bool(self.gateway) and not self.interface

    def cause(self) -> str:
        """Why this VPC's resolver answers the service's names as it does."""
        what = services.label(self.service)
        usable = [e for e in self.interface if e.usable]
        private = [e for e in usable if e.private_dns]
        if private:
            e = private[0]
            return (f"{self.vpc} has {what} Interface endpoint {e.id} with private DNS on: "
                    "the public answer did not come from that VPC's resolver")
        if usable:
            e = usable[0]
            return (f"{what} Interface endpoint {e.id} in {self.vpc} has private DNS off, so "
                    "the VPC resolver still answers with public addresses")
        if self.interface:
            e = self.interface[0]
            return f"{what} Interface endpoint {e.id} in {self.vpc} is {e.state or 'not available'}"
        if self.gateway:
            return (f"{self.vpc} has {_a(what)} {what} Gateway endpoint ({self.gateway[0].id}), "
                    f"which does not change DNS; on-premises clients need {_a(what)} {what} "
                    "Interface endpoint")
        return f"{self.vpc} has no {what} endpoint"


def situation(inv: Inventory, vpc: str, service: str) -> Situation:
    return Situation(
        vpc, service,
        tuple(e for e in inv.interface if e.vpc == vpc and e.service == service),
        tuple(e for e in inv.gateway if e.vpc == vpc and e.service == service))


def inbound_of(inv: Inventory, servers: tuple[model.Server, ...]) -> list[InboundEndpoint]:
    """The inbound endpoints that own any of *servers*' addresses."""
    hosts = {s.host for s in servers}
    return [e for e in inv.inbound if any(a.ip in hosts for a in e.addresses)]


def _a(word: str) -> str:
    return "an" if word[:1] in "AEFHILMNORSX" else "a"


class Diagnosis:
    """Explains violations for one runtime: its groups, its inventory, the ip ranges."""

    def __init__(self, cfg: model.Config, inv: Inventory | None,
                 ranges: IpRanges | None) -> None:
        self.groups = {g.name: g for g in cfg.upstreams}
        self.inv = inv
        self.ranges = ranges
        self.regions = set(cfg.aws.regions) if cfg.aws is not None else set()

    def ranges_text(self, addresses: tuple[str, ...]) -> list[str]:
        """Which published range each of the first addresses is in (with ip ranges)."""
        if self.ranges is None:
            return []
        ranged: dict[Range, list[str]] = {}  # the addresses of one range: described once
        outside = []
        for address in dict.fromkeys(addresses[:_SHOWN]):
            found = self.ranges.lookup(address)
            if found is None:
                outside.append(address)
            else:
                ranged.setdefault(found, []).append(address)
        return ([found.describe(*shown) for found, shown in ranged.items()]
                + [f"{a} is not in AWS's published ranges" for a in outside])

    def cause(self, name: str, group: str) -> str | None:
        """Why the protected *name* got a public answer from *group*, from the inventory."""
        inv = self.inv
        if inv is None:
            return None
        known = {s.name for s in inv.services} | {e.service for e in inv.gateway}
        service = services.service_of_name(name, known)
        if service is None:
            return None
        region = service.split(".")[2]
        if region not in self.regions:
            return f"{region} is not among aws.regions, so its endpoints are not known"
        label = services.label(service)
        cfg = self.groups.get(group)
        inbound = inbound_of(inv, cfg.servers) if cfg is not None else []
        if inbound:
            vpcs = dict.fromkeys(e.vpc for e in inbound)
            return "; ".join(situation(inv, vpc, service).cause() for vpc in vpcs)
        interface = [e for e in inv.interface if e.service == service and e.usable]
        if interface:
            e = interface[0]
            return (f"group {group} is not a Route 53 Resolver inbound endpoint, and only the "
                    f"resolver of {e.vpc} answers {label} names with the addresses of "
                    f"Interface endpoint {e.id}")
        gateway = [e for e in inv.gateway if e.service == service]
        if gateway:
            return situation(inv, gateway[0].vpc, service).cause()
        return f"no {label} endpoint in {region} is in the inventory"


def load_ranges(cfg: model.Config) -> IpRanges | None:
    """The ranges of `aws.ip_ranges` (relative to the configuration file), if set. Raises
    ConfigError when they cannot be read."""
    if cfg.aws is None or cfg.aws.ip_ranges is None:
        return None
    try:
        return ipranges.load(source.beside(cfg.source, cfg.aws.ip_ranges))
    except ipranges.IpRangesError as e:
        raise ConfigError(cfg.source, [ConfigProblem("aws.ip_ranges", str(e))],
                          cfg.positions) from None


def build(cfg: model.Config, inv: Inventory | None, ranges: IpRanges | None = None) -> Diagnosis:
    """The diagnosis for the runtime of *cfg* (its inventory references made concrete), with
    *ranges* or else those `aws.ip_ranges` names. Raises ConfigError when they cannot be
    read."""
    return Diagnosis(cfg, inv, ranges if ranges is not None else load_ranges(cfg))
