"""Reading the AWS API into an Inventory (boto3, the `aws` extra; blocking: call it from a
thread).

For each account (the ambient credentials, or each role of `aws.roles` assumed in turn)
and each region of `aws.regions`, read-only calls only:

- ec2:DescribeVpcEndpoints: Interface and Gateway endpoints;
- ec2:DescribeNetworkInterfaces: the private addresses and Availability Zones of the
  Interface endpoints' ENIs;
- ec2:DescribeVpcEndpointServices: the private DNS names of the services they use;
- route53resolver:ListResolverEndpoints and ListResolverEndpointIpAddresses: the inbound
  endpoints and their addresses;
- ec2:DescribeSubnets: the Availability Zone of each inbound endpoint address;
- ec2:DescribeManagedPrefixLists and GetManagedPrefixListEntries: the AWS-managed prefix
  lists of S3 and DynamoDB, the networks Gateway endpoints route (once per region: they
  are the same in every account);
- sts:GetCallerIdentity (needs no permission) or sts:AssumeRole.

A read is all or nothing: any error raises DiscoveryError and the caller keeps the last
good inventory, because a partial one would drop endpoints that still exist.

boto3 honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_EC2, ...), so the same code talks to
a local API. When FORWARDER_AWS_TESTING=1 (the test suite sets it), `discover` refuses to
run unless every endpoint URL is a loopback address or moto's in-process mock is active:
a test can never reach the real AWS by accident.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

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
from forwarder.aws.services import GATEWAY_SERVICES
from forwarder.config import model

# botocore says at INFO level where it found credentials and endpoints, for every session:
# one line per refresh in the operator's log that tells nothing new
for _name in ("botocore", "boto3"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

TESTING_ENV = "FORWARDER_AWS_TESTING"
SESSION_NAME = "forwarder-discovery"
CHUNK = 100  # IDs per filtered Describe call
GONE = ("deleted", "deleting", "expired")  # endpoint states left out of the inventory


class DiscoveryError(Exception):
    """Reading the AWS API failed; the text says where and why."""


def discover(settings: model.AwsSettings) -> Inventory:
    """Reads every account and region of *settings*. Raises DiscoveryError."""
    refuse_real_aws_in_tests()
    import boto3
    import botocore.config
    import botocore.exceptions

    config = botocore.config.Config(
        connect_timeout=min(settings.timeout, 5.0), read_timeout=settings.timeout,
        retries={"max_attempts": 2, "mode": "standard"}, user_agent_extra="forwarder")
    where = "account lookup (STS)"
    try:
        reader = _Reader(boto3, config)
        found = _Found()
        for session, account in reader.accounts(settings):
            for region in settings.regions:
                where = f"account {account} region {region}"
                reader.read_region(session, account, region, found)
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        op = getattr(e, "operation_name", "?")
        raise DiscoveryError(f"{where}: {op}: {error.get('Code', '?')}: "
                             f"{error.get('Message', '')}".rstrip(": ")) from None
    except botocore.exceptions.BotoCoreError as e:
        raise DiscoveryError(f"{where}: {e}") from None
    return found.inventory(time.time())


def refuse_real_aws_in_tests() -> None:
    """Raises DiscoveryError when FORWARDER_AWS_TESTING=1 and a call could leave this machine."""
    if os.environ.get(TESTING_ENV) != "1" or _moto_mock_active():
        return
    urls = {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL")}
    if "AWS_ENDPOINT_URL" not in urls:
        raise DiscoveryError(f"{TESTING_ENV}=1 but AWS_ENDPOINT_URL is not set: refusing to "
                             "call the real AWS from a test")
    for key, url in urls.items():
        host = urlsplit(url).hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise DiscoveryError(f"{TESTING_ENV}=1 but {key}={url} is not a loopback "
                                 "address: refusing to call it from a test")


def _moto_mock_active() -> bool:
    models = sys.modules.get("moto.core.models")  # only ever imported by tests
    stubber = getattr(models, "botocore_stubber", None)
    return bool(getattr(stubber, "enabled", False))


class _Found:
    """What the reads so far found, in the order they found it."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.interface: list[InterfaceEndpoint] = []
        self.gateway: list[GatewayEndpoint] = []
        self.services: dict[str, EndpointService] = {}
        self.inbound: list[InboundEndpoint] = []
        self.prefix_lists: dict[str, PrefixList] = {}

    def inventory(self, now: float) -> Inventory:
        return Inventory(now, tuple(self.scopes), tuple(self.interface), tuple(self.gateway),
                         tuple(self.services.values()), tuple(self.inbound),
                         tuple(self.prefix_lists.values()))


_loader: Any = None


def _session(boto3: Any, **credentials: Any) -> Any:
    """A boto3 session whose service models come from one loader shared by every read: a
    fresh session parses megabytes of JSON models again (most of a read's CPU time, with
    the interpreter lock held while the event loop serves queries)."""
    global _loader
    import botocore.loaders
    import botocore.session

    core = botocore.session.get_session()
    if _loader is None:
        _loader = botocore.loaders.create_loader(core.get_config_variable("data_path"))
    core.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=core, **credentials)


class _Reader:
    def __init__(self, boto3: Any, config: Any) -> None:
        self.boto3 = boto3
        self.config = config

    def accounts(self, settings: model.AwsSettings) -> Iterator[tuple[Any, str]]:
        """(session, account ID) for the ambient credentials, or for each role."""
        base = _session(self.boto3)
        sts = base.client("sts", region_name=settings.regions[0], config=self.config)
        if not settings.roles:
            yield base, sts.get_caller_identity()["Account"]
            return
        for role in settings.roles:
            creds = sts.assume_role(RoleArn=role, RoleSessionName=SESSION_NAME,
                                    DurationSeconds=900)["Credentials"]
            session = _session(
                self.boto3, aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"])
            yield session, role.split(":")[4]

    def read_region(self, session: Any, account: str, region: str, found: _Found) -> None:
        ec2 = session.client("ec2", region_name=region, config=self.config)
        resolver = session.client("route53resolver", region_name=region, config=self.config)
        found.scopes.append(Scope(account, region))
        endpoints = [e for e in _pages(ec2, "describe_vpc_endpoints", "VpcEndpoints")
                     if str(e.get("State", "")).lower() not in GONE]
        enis = self._enis(ec2, [i for e in endpoints for i in e.get("NetworkInterfaceIds", [])])
        for e in endpoints:
            kind = str(e.get("VpcEndpointType", "")).lower()
            if kind == "gateway":
                found.gateway.append(GatewayEndpoint(
                    e["VpcEndpointId"], account, region, e["ServiceName"], e["VpcId"],
                    str(e.get("State", ""))))
            elif kind == "interface":
                found.interface.append(_interface(e, account, region, enis))
        wanted = sorted({e.service for e in found.interface if e.region == region
                         and e.account == account} - set(found.services))
        for service in self._services(ec2, wanted, region):
            found.services[service.name] = service
        inbound = [e for e in _pages(resolver, "list_resolver_endpoints", "ResolverEndpoints")
                   if e.get("Direction") == "INBOUND"]
        ips = {e["Id"]: list(_pages(resolver, "list_resolver_endpoint_ip_addresses",
                                    "IpAddresses", ResolverEndpointId=e["Id"]))
               for e in inbound}
        zones = self._subnet_zones(ec2, {a["SubnetId"] for v in ips.values() for a in v})
        for e in inbound:
            found.inbound.append(InboundEndpoint(
                e["Id"], str(e.get("Name") or ""), account, region, str(e.get("HostVPCId", "")),
                str(e.get("Status", "")),
                tuple(Address(ip, a["SubnetId"], zones.get(a["SubnetId"], ""))
                      for a in ips[e["Id"]] for ip in (a.get("Ip"), a.get("Ipv6")) if ip)))
        if not any(pl.region == region for pl in found.prefix_lists.values()):
            for pl in self._prefix_lists(ec2, region):  # once per region: AWS's own lists
                found.prefix_lists[pl.name] = pl

    def _prefix_lists(self, ec2: Any, region: str) -> list[PrefixList]:
        """The AWS-managed prefix lists of the services with Gateway endpoints."""
        names = [f"com.amazonaws.{region}.{ipv6}{service}" for service in GATEWAY_SERVICES
                 for ipv6 in ("", "ipv6.")]
        out = []
        for pl in _pages(ec2, "describe_managed_prefix_lists", "PrefixLists",
                         Filters=[{"Name": "owner-id", "Values": ["AWS"]},
                                  {"Name": "prefix-list-name", "Values": names}]):
            entries = _pages(ec2, "get_managed_prefix_list_entries", "Entries",
                             PrefixListId=pl["PrefixListId"])
            out.append(PrefixList(pl["PrefixListId"], pl["PrefixListName"], region,
                                  tuple(e["Cidr"] for e in entries if e.get("Cidr"))))
        return out

    def _enis(self, ec2: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(ids):
            for eni in _pages(ec2, "describe_network_interfaces", "NetworkInterfaces",
                              Filters=[{"Name": "network-interface-id", "Values": chunk}]):
                out[eni["NetworkInterfaceId"]] = eni
        return out

    def _subnet_zones(self, ec2: Any, ids: set[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in _chunks(sorted(ids)):
            for subnet in _pages(ec2, "describe_subnets", "Subnets",
                                 Filters=[{"Name": "subnet-id", "Values": chunk}]):
                out[subnet["SubnetId"]] = subnet.get("AvailabilityZone", "")
        return out

    def _services(self, ec2: Any, names: list[str], region: str) -> list[EndpointService]:
        """The details of the services *names*; one the caller may not see (a PrivateLink
        service that stopped allowing it) is left out rather than failing the read."""
        import botocore.exceptions

        details: list[dict[str, Any]] = []
        for chunk in _chunks(names):
            try:
                details += ec2.describe_vpc_endpoint_services(ServiceNames=chunk)["ServiceDetails"]
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") != "InvalidServiceName":
                    raise
                for name in chunk:  # find the one that is not visible
                    try:
                        details += ec2.describe_vpc_endpoint_services(
                            ServiceNames=[name])["ServiceDetails"]
                    except botocore.exceptions.ClientError as again:
                        if again.response.get("Error", {}).get("Code") != "InvalidServiceName":
                            raise
        out: dict[str, EndpointService] = {}
        for d in details:
            dns = [p.get("PrivateDnsName", "") for p in d.get("PrivateDnsNames", [])]
            if not dns and d.get("PrivateDnsName"):
                dns = [d["PrivateDnsName"]]
            names_ = tuple(dict.fromkeys(_name(n) for n in dns if n))
            old = out.get(d["ServiceName"])  # one entry per type (Interface, Gateway)
            merged = tuple(dict.fromkeys((*(old.private_dns_names if old else ()), *names_)))
            out[d["ServiceName"]] = EndpointService(d["ServiceName"], region,
                                                    str(d.get("Owner", "")), merged)
        return list(out.values())


def _interface(e: dict[str, Any], account: str, region: str,
               enis: dict[str, dict[str, Any]]) -> InterfaceEndpoint:
    options = e.get("DnsOptions") or {}
    addresses = []
    for eni_id in e.get("NetworkInterfaceIds", []):
        eni = enis.get(eni_id)
        if eni is None:
            continue
        ips = [p["PrivateIpAddress"] for p in eni.get("PrivateIpAddresses", [])
               if p.get("PrivateIpAddress")] or [eni.get("PrivateIpAddress")]
        ips += [p["Ipv6Address"] for p in eni.get("Ipv6Addresses", []) if p.get("Ipv6Address")]
        addresses += [Address(ip, eni.get("SubnetId", ""), eni.get("AvailabilityZone", ""))
                      for ip in ips if ip]
    return InterfaceEndpoint(
        id=e["VpcEndpointId"], account=account, region=region, service=e["ServiceName"],
        vpc=e["VpcId"], state=str(e.get("State", "")),
        private_dns=bool(e.get("PrivateDnsEnabled")),
        dns_record_ip_type=str(options.get("DnsRecordIpType") or ""),
        private_dns_only_for_inbound=bool(
            options.get("PrivateDnsOnlyForInboundResolverEndpoint")),
        dns_names=tuple(dict.fromkeys(_name(d["DnsName"]) for d in e.get("DnsEntries", [])
                                      if d.get("DnsName"))),
        addresses=tuple(addresses))


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    if client.can_paginate(operation):
        for page in client.get_paginator(operation).paginate(**kwargs):
            yield from page.get(key, [])
    else:
        yield from getattr(client, operation)(**kwargs).get(key, [])


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    items = list(items)
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _name(text: str) -> str:
    return text.strip().lower().rstrip(".")
