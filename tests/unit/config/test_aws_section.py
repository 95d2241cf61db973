"""The `aws:` section and the inventory references elsewhere: what builds the model, and
the problems (with field paths) of what does not."""

from __future__ import annotations

import sys
import textwrap

import pytest

from forwarder import config
from forwarder.config import model
from forwarder.errors import ConfigError

GOOD = """
upstreams:
  r53:
    servers: [10.9.9.9, aws:inbound/rslvr-in-0123456789abcdef0, "aws:inbound/onprem-in"]
zones:
  - match: amazonaws.com
    upstream: r53
    policy: to-endpoints
  - match: internal.example.com
    records: aws
  - match: .
    upstream: r53
policies:
  to-endpoints:
    on_violation: rewrite
    rewrite: aws
aws:
  regions: [ap-northeast-1, us-east-1, ap-northeast-1]
  roles: [arn:aws:iam::123456789012:role/forwarder-discovery]
  refresh: 5m
  state_file: /var/lib/forwarder/aws-inventory.json
  ip_ranges: /etc/forwarder/ip-ranges.json
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load_text(textwrap.dedent(text), "test.yaml")
    return [str(p) for p in info.value.problems]


def test_the_section_and_its_references_build_the_model() -> None:
    cfg = config.load_text(GOOD, "good.yaml")
    assert cfg.aws == model.AwsSettings(
        regions=("ap-northeast-1", "us-east-1"),
        roles=("arn:aws:iam::123456789012:role/forwarder-discovery",),
        refresh=300.0, state_file="/var/lib/forwarder/aws-inventory.json",
        ip_ranges="/etc/forwarder/ip-ranges.json", stale_after=3600.0, timeout=10.0)
    group = cfg.group_named("r53")
    assert group is not None
    assert group.servers == (model.Server("10.9.9.9"),)
    assert group.discovered == ("rslvr-in-0123456789abcdef0", "onprem-in")
    local = cfg.rules[1]
    assert local.action is model.RuleAction.LOCAL and local.aws_records and not local.records
    policy = cfg.policy_named("to-endpoints")
    assert policy is not None and policy.rewrite_from_aws and policy.rewrite == ()


def test_stale_after_defaults_to_three_refreshes_when_that_is_longer() -> None:
    cfg = config.load_text(GOOD.replace("refresh: 5m", "refresh: 2h"), "good.yaml")
    assert cfg.aws is not None and cfg.aws.stale_after == 6 * 3600


def test_a_group_of_inventory_servers_only_is_valid() -> None:
    cfg = config.load_text("""
        upstreams:
          r53: {servers: [aws:inbound/rslvr-in-1]}
        zones: [{match: ., upstream: r53}]
        aws: {regions: [eu-west-1]}
    """, "t.yaml")
    assert cfg.upstreams[0].servers == () and cfg.upstreams[0].discovered == ("rslvr-in-1",)


@pytest.mark.parametrize(("section", "expected"), [
    ("aws: {regions: [tokyo]}", "aws.regions[0]: 'tokyo' is not an AWS region name"),
    ("aws: {}", "aws.regions: required"),
    ("aws: {regions: [us-east-1], roles: [forwarder]}",
     "aws.roles[0]: 'forwarder' is not an IAM role ARN"),
    ("aws: {regions: [us-east-1], refresh: 10ms}", "aws.refresh: 0.01 is below the minimum 1.0"),
    ("aws: {regions: [us-east-1], regoins: [x]}",
     "aws.regoins: unknown key (did you mean 'regions'?)"),
    ("aws: [us-east-1]", "aws: expected a mapping, found a list"),
])
def test_a_bad_section_is_named_with_its_field(section: str, expected: str) -> None:
    found = problems(f"zones: [{{match: ., action: refuse}}]\n{section}\n")
    assert any(p.startswith(expected) for p in found), found


def test_without_boto3_the_section_is_an_error_naming_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    found = problems("zones: [{match: ., action: refuse}]\naws: {regions: [us-east-1]}\n")
    assert found == ["aws: AWS discovery needs boto3, which is not installed: "
                     "pip install 'forwarder[aws]'"]


def test_references_without_the_section_are_errors() -> None:
    """In file order, as every problem is reported."""
    found = problems("""
        upstreams:
          r53: {servers: [aws:inbound/rslvr-in-1]}
        zones:
          - {match: amazonaws.com, upstream: r53, policy: p}
          - {match: example.com, records: aws}
        policies:
          p: {on_violation: rewrite, rewrite: aws}
    """)
    assert found == [
        "upstreams.r53.servers: aws:inbound/rslvr-in-1 needs the aws: section (regions to "
        "read the AWS inventory from)",
        "zones[1].records: records: aws needs the aws: section (regions to read the AWS "
        "inventory from)",
        "policies.p.rewrite: rewrite: aws needs the aws: section (regions to read the AWS "
        "inventory from)",
    ]


@pytest.mark.parametrize("server", ["aws:outbound/rslvr-out-1", "aws:inbound/", "aws:x"])
def test_a_reference_to_something_else_is_an_error(server: str) -> None:
    found = problems(f"""
        upstreams:
          r53: {{servers: ["{server}"]}}
        zones: [{{match: ., upstream: r53}}]
        aws: {{regions: [us-east-1]}}
    """)
    assert found[0] == (f"upstreams.r53.servers[0]: {server!r}: expected aws:inbound/ID or "
                        "aws:inbound/NAME of a Route 53 Resolver inbound endpoint")


# --- aws:gateway:SERVICE:REGION in a policy's allowed, and the section without regions ----


GATEWAY = """
zones:
  - {match: amazonaws.com, upstream: system, policy: in-vpc, clients: [10.20.0.0/16]}
policies:
  in-vpc:
    allowed: [default, "aws:gateway:s3:ap-northeast-1", AWS:Gateway:DynamoDB:ap-northeast-1,
              "aws:gateway:s3:ap-northeast-1"]
"""


def test_gateway_entries_are_kept_apart_from_the_networks() -> None:
    """The entries are normalised and kept once; `allowed` holds only the networks until
    the runtime fills in what the entries stand for."""
    cfg = config.load_text(GATEWAY + "aws: {ip_ranges: /etc/forwarder/ip-ranges.json}\n",
                           "t.yaml")
    policy = cfg.policy_named("in-vpc")
    assert policy is not None
    assert policy.gateways == ("aws:gateway:s3:ap-northeast-1",
                               "aws:gateway:dynamodb:ap-northeast-1")
    assert policy.allowed == model.DEFAULT_ALLOWED
    assert policy.gateway_networks == () and policy.allowed_networks == model.DEFAULT_ALLOWED


def test_a_section_with_only_ip_ranges_reads_no_api_and_needs_no_boto3(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    cfg = config.load_text(GATEWAY + "aws: {ip_ranges: /etc/forwarder/ip-ranges.json}\n",
                           "t.yaml")
    assert cfg.aws is not None and cfg.aws.regions == () and not cfg.aws.discovers


@pytest.mark.parametrize(("section", "expected"), [
    ("", "policies.in-vpc.allowed: aws:gateway:s3:ap-northeast-1 needs the aws: section: "
         "ip_ranges (AWS's published ranges) or regions (to read the managed prefix lists)"),
    ("aws: {regions: [us-east-1]}",
     "policies.in-vpc.allowed: aws:gateway:s3:ap-northeast-1: ap-northeast-1 is not among "
     "aws.regions and aws.ip_ranges is not set: nothing says which addresses its Gateway "
     "endpoint routes"),
])
def test_a_gateway_entry_needs_a_source_for_its_region(section: str, expected: str) -> None:
    assert expected in problems(GATEWAY + section + "\n")


def test_a_gateway_entry_in_a_discovered_region_needs_no_ip_ranges() -> None:
    cfg = config.load_text(GATEWAY + "aws: {regions: [ap-northeast-1]}\n", "t.yaml")
    assert cfg.aws is not None and cfg.aws.discovers


@pytest.mark.parametrize("entry", ["aws:gateway:s3", "aws:gateway:ssm:ap-northeast-1",
                                   "aws:gateway:s3:tokyo", "aws:gateway:s3:ap-northeast-1:x"])
def test_a_malformed_gateway_entry_is_named(entry: str) -> None:
    found = problems(f"""
        zones: [{{match: ., upstream: system, policy: p}}]
        policies:
          p: {{allowed: [default, "{entry}"]}}
        aws: {{ip_ranges: /x.json}}
    """)
    assert found == [f"policies.p.allowed[1]: {entry!r}: expected aws:gateway:SERVICE:REGION "
                     "with SERVICE s3 or dynamodb (the services with Gateway endpoints), e.g. "
                     "aws:gateway:s3:ap-northeast-1"]


def test_inventory_references_need_regions_not_only_ip_ranges() -> None:
    found = problems("""
        upstreams:
          r53: {servers: [aws:inbound/rslvr-in-1]}
        zones:
          - {match: amazonaws.com, upstream: r53, policy: p}
        policies:
          p: {on_violation: rewrite, rewrite: aws}
        aws: {ip_ranges: /x.json}
    """)
    assert found == [
        "upstreams.r53.servers: aws:inbound/rslvr-in-1 needs aws.regions: the AWS inventory "
        "is read from the API of those regions",
        "policies.p.rewrite: rewrite: aws needs aws.regions: the AWS inventory is read from "
        "the API of those regions",
    ]
