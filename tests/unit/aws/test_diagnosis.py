"""Why a protected name got a public address, as the policy's EDE and log line say it
(aws/diagnosis.py, in the order aws/advice.py puts it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from forwarder import config
from forwarder.aws import advice, diagnosis, rules
from forwarder.aws.inventory import Inventory
from forwarder.errors import ConfigError
from tests.unit.aws import builders as b

RANGES = Path(__file__).resolve().parents[2] / "fixtures" / "ip-ranges.json"
NAME = f"s3.{b.REGION}.amazonaws.com"


def explain(inv: Inventory | None, group: str = "r53", ranges: bool = False,
            name: str = NAME, addresses: tuple[str, ...] = ("52.219.150.28",)) -> str | None:
    extra = f", ip_ranges: {RANGES}" if ranges else ""
    cfg = config.load_text(textwrap.dedent(f"""
        upstreams:
          r53: {{servers: [aws:inbound/rslvr-in-0001]}}
          corp: {{servers: [192.168.1.53]}}
        zones: [{{match: ., upstream: corp}}]
        aws: {{regions: [{b.REGION}]{extra}}}
    """), "t.yaml")
    concrete = rules.apply(cfg, inv)
    return advice.build(concrete, diagnosis.build(concrete, inv)).explain(name, addresses, group)


def test_the_gateway_only_vpc_of_the_inbound_endpoint() -> None:
    inv = b.inventory(b.gateway(), b.inbound())
    assert explain(inv) == ("vpc-0abc has an S3 Gateway endpoint (vpce-0gw), which does not "
                            "change DNS; on-premises clients need an S3 Interface endpoint")


def test_the_cause_comes_before_the_address_ranges() -> None:
    """An EDE text is cut at 400 bytes: what to fix goes first, the ranges (a fact about the
    addresses) last."""
    inv = b.inventory(b.gateway(), b.inbound())
    text = explain(inv, ranges=True, addresses=("52.219.150.28", "8.8.8.8", "52.219.1.1"))
    assert text == (
        "vpc-0abc has an S3 Gateway endpoint (vpce-0gw), which does not change DNS; "
        "on-premises clients need an S3 Interface endpoint; 52.219.150.28 is in AWS's "
        "published S3 range for ap-northeast-1 (52.219.128.0/17); 8.8.8.8 is not in AWS's "
        "published ranges")


@pytest.mark.parametrize(("items", "expected"), [
    ((b.interface("vpce-0s3", private_dns=False), b.inbound()),
     "S3 Interface endpoint vpce-0s3 in vpc-0abc has private DNS off, so the VPC resolver "
     "still answers with public addresses"),
    ((b.interface("vpce-0s3"), b.inbound()),
     "vpc-0abc has S3 Interface endpoint vpce-0s3 with private DNS on: the public answer did "
     "not come from that VPC's resolver"),
    ((b.interface("vpce-0s3", state="pendingAcceptance"), b.inbound()),
     "S3 Interface endpoint vpce-0s3 in vpc-0abc is pendingAcceptance"),
    ((b.inbound(),), "vpc-0abc has no S3 endpoint"),
])
def test_the_cause_in_the_inbound_endpoints_vpc(items: tuple[object, ...], expected: str) -> None:
    assert explain(b.inventory(*items)) == expected


def test_a_group_that_is_no_inbound_endpoint() -> None:
    inv = b.inventory(b.interface("vpce-0s3", vpc="vpc-0far"), b.inbound())
    assert explain(inv, group="corp") == (
        "group corp is not a Route 53 Resolver inbound endpoint, and only the resolver of "
        "vpc-0far answers S3 names with the addresses of Interface endpoint vpce-0s3")
    assert explain(b.inventory(), group="corp") == \
        "no S3 endpoint in ap-northeast-1 is in the inventory"


def test_a_region_that_is_not_read_and_names_that_are_not_aws() -> None:
    inv = b.inventory(b.gateway(), b.inbound())
    assert explain(inv, name="s3.eu-west-1.amazonaws.com") == \
        "eu-west-1 is not among aws.regions, so its endpoints are not known"
    assert explain(inv, name="www.example.com") is None
    assert explain(None) is None


def test_an_unreadable_ip_ranges_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = config.load_text(f"zones: [{{match: ., action: refuse}}]\naws: {{regions: [us-east-1], "
                           f"ip_ranges: {tmp_path}/none.json}}\n", "t.yaml")
    with pytest.raises(ConfigError, match=r"aws\.ip_ranges: cannot read"):
        diagnosis.build(cfg, None)
