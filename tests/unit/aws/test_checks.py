"""`forwarder aws check`'s findings, from moto's data where moto models it."""

from __future__ import annotations

import textwrap
from dataclasses import replace

from forwarder import config
from forwarder.aws import api, checks
from forwarder.aws.inventory import EndpointService
from forwarder.config import model
from tests.awsfakes import REGION, World
from tests.unit.aws import builders as b


def load(text: str) -> model.Config:
    return config.load_text(textwrap.dedent(text), "check.yaml")


def onprem(extra: str = "") -> model.Config:
    return load(f"""
        upstreams:
          r53: {{servers: [aws:inbound/onprem-in]}}
        zones:
          - {{match: amazonaws.com, upstream: r53}}
          - {{match: ., action: refuse}}
        aws: {{regions: [{REGION}]}}
        {extra}
    """)


def test_s3_names_sent_to_a_vpc_with_only_a_gateway_endpoint(moto_world: World) -> None:
    """The field reports' failure: the S3 Gateway endpoint changes routes, not DNS."""
    vpc = moto_world.vpc()
    gateway = moto_world.gateway(vpc, "s3")
    inbound = moto_world.inbound(vpc)
    inv = api.discover(model.AwsSettings(regions=(REGION,)))

    (found,) = [f for f in checks.run(onprem(), inv) if f.check == "gateway-only"]

    assert found.severity == checks.ERROR
    assert found.where == "zones[0] (match amazonaws.com)"
    assert found.problem == (
        f"S3 names such as s3.{REGION}.amazonaws.com are forwarded (group r53) to inbound "
        f"endpoint {inbound} in {vpc.id}, which has only an S3 Gateway endpoint ({gateway}). "
        "A Gateway endpoint changes routes, not DNS: that VPC's resolver answers S3 names "
        "with public addresses, which on-premises clients cannot reach.")
    assert f"--vpc-id {vpc.id} --service-name com.amazonaws.{REGION}.s3" in found.fix
    assert "--private-dns-enabled" in found.fix


def test_an_s3_interface_endpoint_beside_the_gateway_clears_it(moto_world: World) -> None:
    vpc = moto_world.vpc()
    moto_world.gateway(vpc, "s3")
    moto_world.interface(vpc, "s3")
    moto_world.inbound(vpc)
    inv = api.discover(model.AwsSettings(regions=(REGION,)))
    assert checks.run(onprem(), inv) == []


def test_gateway_only_counts_only_the_vpc_of_the_inbound_endpoint(moto_world: World) -> None:
    """An S3 Gateway endpoint in some other VPC does not matter to these names."""
    resolver_vpc, other = moto_world.vpc(), moto_world.vpc("10.1.0.0/16")
    moto_world.interface(resolver_vpc, "s3")
    moto_world.gateway(other, "s3")
    moto_world.inbound(resolver_vpc)
    inv = api.discover(model.AwsSettings(regions=(REGION,)))
    assert [f.check for f in checks.run(onprem(), inv)] == []


def test_interface_endpoint_with_private_dns_off(moto_world: World) -> None:
    vpc = moto_world.vpc()
    ssm = moto_world.interface(vpc, "ssm", private_dns=False)
    moto_world.inbound(vpc)
    inv = api.discover(model.AwsSettings(regions=(REGION,)))
    (found,) = checks.run(onprem(), inv)
    assert (found.check, found.severity) == ("private-dns-off", checks.WARNING)
    assert found.where.startswith(f"{ssm} (SSM, {vpc.id}, {REGION}")
    assert found.problem.startswith(f"private DNS is off: the VPC resolver answers "
                                    f"ssm.{REGION}.amazonaws.com with public addresses")
    assert f"--vpc-endpoint-id {ssm} --private-dns-enabled" in found.fix


def test_an_inbound_endpoint_in_one_availability_zone(moto_world: World) -> None:
    vpc = moto_world.vpc()
    inbound = moto_world.inbound(vpc, subnets=[vpc.subnets[0], vpc.subnets[0]])
    inv = api.discover(model.AwsSettings(regions=(REGION,)))
    (found,) = checks.run(onprem(), inv)
    assert (found.check, found.where.split()[0]) == ("inbound-one-az", inbound)
    assert f"all 2 addresses of inbound endpoint {inbound} are in {REGION}a" in found.problem
    assert f"--resolver-endpoint-id {inbound}" in found.fix


def test_a_static_rewrite_address_no_endpoint_owns(moto_world: World) -> None:
    vpc = moto_world.vpc()
    s3 = moto_world.interface(vpc, "s3")
    moto_world.inbound(vpc)
    inv = api.discover(model.AwsSettings(regions=(REGION,)))
    owned = moto_world.addresses(s3)[0]
    cfg = onprem(f"""
        policies:
          p:
            on_violation: rewrite
            rewrite:
              s3.{REGION}.amazonaws.com: {{A: [{owned}, 10.0.1.15]}}
    """)
    (found,) = checks.run(cfg, inv)
    assert (found.check, found.severity) == ("rewrite-unowned", checks.ERROR)
    assert found.where == f"policies.p.rewrite.s3.{REGION}.amazonaws.com.A[1]"
    assert found.problem.startswith("10.0.1.15 is not an address of any endpoint")
    assert found.fix.startswith(f"the S3 Interface endpoint {s3} has ")


def test_a_static_rewrite_address_of_another_service() -> None:
    inv = b.inventory(b.interface("vpce-0ssm", b.SSM, ips=("10.0.1.30",)), b.inbound(),
                      services=(EndpointService(b.SSM, b.REGION, "amazon",
                                                (f"ssm.{b.REGION}.amazonaws.com",)),))
    cfg = onprem(f"""
        policies:
          p: {{on_violation: rewrite, rewrite: {{s3.{b.REGION}.amazonaws.com: {{A: [10.0.1.30]}}}}}}
    """)
    (found,) = checks.run(cfg, inv)
    assert found.problem == ("10.0.1.30 belongs to vpce-0ssm, the SSM Interface endpoint, not "
                             "to an endpoint of S3")


def test_an_amazonaws_rule_whose_upstream_is_not_an_inbound_endpoint() -> None:
    inv = b.inventory(b.inbound())
    cfg = load(f"""
        upstreams:
          corp: {{servers: [192.168.1.53, 10.0.1.10]}}
        zones:
          - {{match: s3.{b.REGION}.amazonaws.com, upstream: corp}}
          - {{match: ., upstream: corp}}
        aws: {{regions: [{b.REGION}]}}
    """)
    (found,) = checks.run(cfg, inv)
    assert (found.check, found.where) == ("upstream-not-inbound",
                                          f"zones[0] (match s3.{b.REGION}.amazonaws.com)")
    assert "server 192.168.1.53:53 is not a Route 53 Resolver inbound endpoint" in found.problem
    assert found.fix == "forward them to an inbound endpoint: upstreams.corp.servers: " \
                        "[aws:inbound/rslvr-in-0001]"


def test_an_inbound_reference_the_inventory_lacks() -> None:
    (found,) = checks.run(onprem(), b.inventory())
    assert (found.check, found.where) == ("inbound-missing", "upstreams.r53")
    assert found.problem.startswith("aws:inbound/onprem-in is not in the inventory")


def test_privatelink_with_private_dns_off_is_fine_when_records_aws_serves_it() -> None:
    link = EndpointService(b.LINK, b.REGION, "2109", ("internal.example.com",))
    inv = b.inventory(b.interface("vpce-0link", b.LINK, private_dns=False), b.inbound(),
                      services=(link,))
    (found,) = checks.run(onprem(), inv)
    assert found.problem.startswith("private DNS is off, and no rule answers the service's name "
                                    "internal.example.com")
    assert found.fix.startswith("add a rule that serves it from the inventory: "
                                "{match: internal.example.com, records: aws}")
    served = (*onprem().rules, model.Rule(2, "pl", "example.com", model.RuleAction.LOCAL,
                                          aws_records=True))
    assert checks.run(replace(onprem(), rules=served), inv) == []


def test_render_lists_findings_and_counts() -> None:
    text = checks.render(checks.run(onprem(), b.inventory()))
    assert text.splitlines()[0] == "error inbound-missing: upstreams.r53"
    assert text.splitlines()[-1] == "1 finding(s): 1 error"
    assert checks.render([]) == "no problems found"
