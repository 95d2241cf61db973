"""Reading the AWS API (moto's mock) into an inventory; errors; never the real AWS."""

from __future__ import annotations

from forwarder.aws import api
from forwarder.config import model
from tests.awsfakes import ACCOUNT, REGION, World

SETTINGS = model.AwsSettings(regions=(REGION,), timeout=2.0)


def test_endpoints_and_inbound_resolvers_are_found(moto_world: World) -> None:
    vpc = moto_world.vpc()
    gateway = moto_world.gateway(vpc, "s3")
    ssm = moto_world.interface(vpc, "ssm", private_dns=False)
    inbound = moto_world.inbound(vpc, ips=["10.0.1.10", "10.0.2.10"])

    inv = api.discover(SETTINGS)

    assert [(s.account, s.region) for s in inv.scopes] == [(ACCOUNT, REGION)]
    assert [(g.id, g.service, g.vpc, g.state) for g in inv.gateway] == [
        (gateway, f"com.amazonaws.{REGION}.s3", vpc.id, "available")]
    (e,) = inv.interface
    assert (e.id, e.service, e.vpc, e.private_dns, e.usable) == (
        ssm, f"com.amazonaws.{REGION}.ssm", vpc.id, False, True)
    assert sorted(a.ip for a in e.addresses) == sorted(moto_world.addresses(ssm))
    assert {(a.subnet, a.az) for a in e.addresses} == {
        (vpc.subnets[0], f"{REGION}a"), (vpc.subnets[1], f"{REGION}c")}
    assert e.dns_names  # moto's names are not AWS's format: only their presence is checked
    assert inv.service(e.service) is not None
    assert inv.service(e.service).private_dns_names == (f"ssm.{REGION}.amazonaws.com",)
    (r,) = inv.inbound
    assert (r.id, r.name, r.vpc, r.status) == (inbound, "onprem-in", vpc.id, "OPERATIONAL")
    assert [(a.ip, a.subnet, a.az) for a in r.addresses] == [
        ("10.0.1.10", vpc.subnets[0], f"{REGION}a"), ("10.0.2.10", vpc.subnets[1], f"{REGION}c")]


def test_a_privatelink_service_brings_its_private_dns_name(moto_world: World) -> None:
    vpc = moto_world.vpc()
    service = moto_world.privatelink_service(vpc, "internal.example.com")
    endpoint = moto_world.interface(vpc, service, private_dns=False)

    inv = api.discover(SETTINGS)

    (e,) = inv.interface
    assert (e.id, e.service) == (endpoint, service)
    details = inv.service(service)
    assert details is not None and details.private_dns_names == ("internal.example.com",)
    assert details.owner == ACCOUNT


def test_deleted_endpoints_are_left_out(moto_world: World) -> None:
    vpc = moto_world.vpc()
    old = moto_world.interface(vpc, "s3")
    moto_world.delete(old)
    new = moto_world.interface(vpc, "s3")
    inv = api.discover(SETTINGS)
    assert [e.id for e in inv.interface] == [new]


def test_every_region_is_read(moto_world: World) -> None:
    other = World("us-east-1")
    other.interface(other.vpc(), "sts")
    moto_world.gateway(moto_world.vpc(), "dynamodb")
    inv = api.discover(model.AwsSettings(regions=(REGION, "us-east-1")))
    assert [s.region for s in inv.scopes] == [REGION, "us-east-1"]
    assert [(e.region, e.service) for e in inv.interface] == [
        ("us-east-1", "com.amazonaws.us-east-1.sts")]
    assert [g.region for g in inv.gateway] == [REGION]


def test_roles_are_assumed_and_name_the_account(moto_world: World) -> None:
    """With roles, each role's account is read (and not the ambient one)."""
    role = "arn:aws:iam::111122223333:role/forwarder-discovery"
    moto_world.gateway(moto_world.vpc(), "dynamodb")  # the ambient account
    theirs = moto_world.assume(role)
    gateway = theirs.gateway(theirs.vpc(), "s3")
    inv = api.discover(model.AwsSettings(regions=(REGION,), roles=(role,)))
    assert [s.account for s in inv.scopes] == ["111122223333"]
    assert [(g.id, g.account) for g in inv.gateway] == [(gateway, "111122223333")]


def test_the_managed_prefix_lists_of_gateway_services_are_read_once_per_region(
        moto_world: World) -> None:
    """AWS's own lists, the same in every account: S3's and DynamoDB's, with their
    networks (moto's defaults), and no other list."""
    role = "arn:aws:iam::111122223333:role/forwarder-discovery"
    moto_world.assume(role)
    inv = api.discover(model.AwsSettings(regions=(REGION,), roles=(role, role)))
    assert sorted(p.name for p in inv.prefix_lists) == [
        f"com.amazonaws.{REGION}.dynamodb", f"com.amazonaws.{REGION}.s3"]
    s3 = inv.prefix_list(f"com.amazonaws.{REGION}.s3")
    assert s3 is not None and s3.region == REGION and s3.id.startswith("pl-")
    assert "52.216.0.0/15" in s3.cidrs
