"""An AWS world for tests: VPCs, endpoints and inbound resolvers made with boto3 against
moto (its in-process mock in unit tests, its server on 127.0.0.1 end to end), and a fake
AWS API that answers errors.

What moto does not model, and the tests therefore do not rely on: the Interface
endpoints' DNS entries are not AWS's names (`vpce-ID-x.com.amazonaws.REGION.SERVICE`, no
zonal entries), their ENI addresses are random 10.x addresses outside the subnets, the
DnsOptions (IP type, private DNS only for inbound endpoints) are ignored, and Gateway
endpoints report PrivateDnsEnabled true. Inventories that need these are built by hand.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import boto3

REGION = "ap-northeast-1"
ACCOUNT = "123456789012"  # moto's default account


@dataclass
class Vpc:
    id: str
    subnets: list[str]  # one per Availability Zone: REGION a, c
    route_table: str
    security_group: str


_session: Any = None


def _shared() -> Any:
    """One boto3 session for the tests' own clients: a new one parses the service models
    again (a second or more each)."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


class World:
    """Makes AWS resources in the moto account that boto3's environment points at."""

    def __init__(self, region: str = REGION, session: Any = None) -> None:
        self.region = region
        self.session = session or _shared()
        self.ec2 = self.session.client("ec2", region_name=region)
        self.resolver = self.session.client("route53resolver", region_name=region)

    def assume(self, role: str) -> World:
        """The same region, in the account of *role* (moto keeps accounts apart)."""
        creds = self.session.client("sts", region_name=self.region).assume_role(
            RoleArn=role, RoleSessionName="test")["Credentials"]
        return World(self.region, boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"]))

    def vpc(self, cidr: str = "10.0.0.0/16") -> Vpc:
        vpc = self.ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        base = cidr.split(".")
        subnets = [
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"{base[0]}.{base[1]}.{i}.0/24",
                                   AvailabilityZone=f"{self.region}{az}")["Subnet"]["SubnetId"]
            for i, az in ((1, "a"), (2, "c"))]
        tables = self.ec2.describe_route_tables(
            Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"]
        group = self.ec2.create_security_group(GroupName=f"resolver-{vpc}", Description="dns",
                                               VpcId=vpc)["GroupId"]
        return Vpc(vpc, subnets, tables[0]["RouteTableId"], group)

    def gateway(self, vpc: Vpc, service: str = "s3") -> str:
        return self.ec2.create_vpc_endpoint(
            VpcId=vpc.id, ServiceName=self._service(service), VpcEndpointType="Gateway",
            RouteTableIds=[vpc.route_table])["VpcEndpoint"]["VpcEndpointId"]

    def interface(self, vpc: Vpc, service: str = "s3", private_dns: bool = True,
                  subnets: list[str] | None = None) -> str:
        return self.ec2.create_vpc_endpoint(
            VpcId=vpc.id, ServiceName=self._service(service), VpcEndpointType="Interface",
            SubnetIds=subnets or vpc.subnets,
            PrivateDnsEnabled=private_dns)["VpcEndpoint"]["VpcEndpointId"]

    def delete(self, endpoint: str) -> None:
        self.ec2.delete_vpc_endpoints(VpcEndpointIds=[endpoint])

    def addresses(self, endpoint: str) -> list[str]:
        """The private addresses of an Interface endpoint's ENIs, as moto gave them."""
        found = self.ec2.describe_vpc_endpoints(VpcEndpointIds=[endpoint])["VpcEndpoints"][0]
        enis = self.ec2.describe_network_interfaces(
            NetworkInterfaceIds=found["NetworkInterfaceIds"])["NetworkInterfaces"]
        return sorted((e["PrivateIpAddress"] for e in enis),
                      key=lambda ip: tuple(int(p) for p in ip.split(".")))

    def inbound(self, vpc: Vpc, subnets: list[str] | None = None, name: str = "onprem-in",
                ips: list[str | None] | None = None) -> str:
        subnets = subnets or vpc.subnets
        ips = ips or [None] * len(subnets)
        addresses = [{"SubnetId": s, **({"Ip": ip} if ip else {})}
                     for s, ip in zip(subnets, ips, strict=True)]
        return self.resolver.create_resolver_endpoint(
            CreatorRequestId=f"{name}-{vpc.id}-{len(addresses)}", Name=name,
            SecurityGroupIds=[vpc.security_group], Direction="INBOUND",
            IpAddresses=addresses)["ResolverEndpoint"]["Id"]

    def privatelink_service(self, vpc: Vpc, private_dns_name: str) -> str:
        """A PrivateLink endpoint service (behind an internal NLB) with a private DNS name."""
        elb = self.session.client("elbv2", region_name=self.region)
        lb = elb.create_load_balancer(Name=f"nlb-{vpc.id[-6:]}", Subnets=vpc.subnets[:1],
                                      Scheme="internal", Type="network")
        return self.ec2.create_vpc_endpoint_service_configuration(
            NetworkLoadBalancerArns=[lb["LoadBalancers"][0]["LoadBalancerArn"]],
            PrivateDnsName=private_dns_name,
            AcceptanceRequired=False)["ServiceConfiguration"]["ServiceName"]

    def _service(self, service: str) -> str:
        return service if "." in service else f"com.amazonaws.{self.region}.{service}"


# --- an AWS API that refuses -------------------------------------------------------------------

STS_IDENTITY = (
    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/forwarder</Arn>"
    "<UserId>AIDAFORWARDER</UserId><Account>123456789012</Account></GetCallerIdentityResult>"
    "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></GetCallerIdentityResponse>")
EC2_DENIED = (
    "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not "
    "authorized to perform this operation.</Message></Error></Errors>"
    "<RequestID>1</RequestID></Response>")


class _Denying(BaseHTTPRequestHandler):
    """STS tells who is calling; every EC2 call is refused as AWS refuses it."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        self.server.calls.append(form.get("Action", ["?"])[0])  # type: ignore[attr-defined]
        if form.get("Action") == ["GetCallerIdentity"]:
            status, body = 200, STS_IDENTITY
        else:
            status, body = 403, EC2_DENIED
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def denying_api() -> Iterator[tuple[str, list[str]]]:
    """An AWS API on 127.0.0.1 that refuses every EC2 call: (its URL, the actions asked)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Denying)
    server.calls = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.calls  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
