"""Inventories built by hand, for what moto does not model (DNS options, addresses inside
the subnets, zonal names) and for tests that need no AWS API at all."""

from __future__ import annotations

from forwarder.aws.inventory import (
    Address,
    EndpointService,
    GatewayEndpoint,
    InboundEndpoint,
    InterfaceEndpoint,
    Inventory,
    PrefixList,
    Scope,
)

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"
S3 = f"com.amazonaws.{REGION}.s3"
SSM = f"com.amazonaws.{REGION}.ssm"
LINK = f"com.amazonaws.vpce.{REGION}.vpce-svc-0f00"


def interface(id: str, service: str = S3, vpc: str = "vpc-0abc", ips: tuple[str, ...] = (
        "10.0.1.15", "10.0.2.15"), private_dns: bool = True, state: str = "available",
        **extra: object) -> InterfaceEndpoint:
    zones = ("a", "c")
    return InterfaceEndpoint(
        id=id, account=ACCOUNT, region=REGION, service=service, vpc=vpc, state=state,
        private_dns=private_dns,
        addresses=tuple(Address(ip, f"subnet-{i}", f"{REGION}{zones[i % 2]}")
                        for i, ip in enumerate(ips)), **extra)  # type: ignore[arg-type]


def gateway(id: str = "vpce-0gw", service: str = S3, vpc: str = "vpc-0abc") -> GatewayEndpoint:
    return GatewayEndpoint(id, ACCOUNT, REGION, service, vpc, "available")


def inbound(id: str = "rslvr-in-0001", vpc: str = "vpc-0abc",
            ips: tuple[str, ...] = ("10.0.1.10", "10.0.2.10"),
            zones: tuple[str, ...] = ("a", "c"), name: str = "onprem-in") -> InboundEndpoint:
    return InboundEndpoint(id, name, ACCOUNT, REGION, vpc, "OPERATIONAL",
                           tuple(Address(ip, f"subnet-{i}", f"{REGION}{zones[i]}")
                                 for i, ip in enumerate(ips)))


def prefix_list(service: str = "s3", cidrs: tuple[str, ...] = (
        "52.219.0.0/20", "52.219.128.0/17", "3.5.152.0/21"), id: str = "pl-61a54008",
        region: str = REGION) -> PrefixList:
    return PrefixList(id, f"com.amazonaws.{region}.{service}", region, cidrs)


def inventory(*items: object, services: tuple[EndpointService, ...] = (),
              fetched_at: float = 1_700_000_000.0) -> Inventory:
    return Inventory(
        fetched_at=fetched_at, scopes=(Scope(ACCOUNT, REGION),),
        interface=tuple(i for i in items if isinstance(i, InterfaceEndpoint)),
        gateway=tuple(i for i in items if isinstance(i, GatewayEndpoint)),
        services=services,
        inbound=tuple(i for i in items if isinstance(i, InboundEndpoint)),
        prefix_lists=tuple(i for i in items if isinstance(i, PrefixList)))
