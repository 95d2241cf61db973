"""What `aws:gateway:SERVICE:REGION` in a policy's allowed stands for: the prefix list in
the inventory, else AWS's published ranges, else nothing; and where check-config warns."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from forwarder import config, runtime
from forwarder.aws import gateway, ipranges
from forwarder.config import model
from tests.unit.aws import builders as b

RANGES = Path(__file__).resolve().parents[2] / "fixtures" / "ip-ranges.json"
S3 = "aws:gateway:s3:ap-northeast-1"


@pytest.fixture
def ranges() -> ipranges.IpRanges:
    return ipranges.load(str(RANGES))


def test_the_prefix_list_in_the_inventory_wins(ranges: ipranges.IpRanges) -> None:
    """The route tables carry the prefix list, so it is the truth; ranges are a stand-in."""
    inv = b.inventory(b.prefix_list(cidrs=("52.219.128.0/17", "3.5.152.0/21", "3.5.152.0/21")))
    assert gateway.networks(S3, inv, ranges) == (
        ("3.5.152.0/21", "52.219.128.0/17"), "prefix list pl-61a54008")


def test_the_published_ranges_stand_in_without_a_prefix_list(
        ranges: ipranges.IpRanges) -> None:
    """S3's ranges of that region only: not AMAZON's, not another region's; IPv6 too."""
    assert gateway.networks(S3, b.inventory(b.gateway()), ranges) == (
        ("52.219.128.0/17", "2600:1f70:4000::/40"), f"the published ranges in {RANGES}")
    assert gateway.networks("aws:gateway:s3:us-east-1", None, ranges)[0] == ("52.216.0.0/15",)


@pytest.mark.parametrize(("inv", "use_ranges", "why"), [
    (None, False, "no AWS inventory read yet and no aws.ip_ranges"),
    (b.inventory(), False, "no prefix list or published range of dynamodb in ap-northeast-1"),
    (None, True, "no prefix list or published range of dynamodb in ap-northeast-1"),
])
def test_without_a_source_the_entry_stands_for_nothing(
        ranges: ipranges.IpRanges, inv: object, use_ranges: bool, why: str) -> None:
    found = gateway.networks("aws:gateway:dynamodb:ap-northeast-1", inv,  # type: ignore[arg-type]
                             ranges if use_ranges else None)
    assert found == ((), why)


def load(text: str) -> model.Config:
    return config.load_text(textwrap.dedent(text), "t.yaml")


IN_VPC = f"""
    acl: {{allow: [default]}}
    zones:
      - {{match: amazonaws.com, upstream: system, policy: in-vpc{{clients}}}}
      - {{match: ., upstream: system, policy: private}}
    policies:
      in-vpc: {{allowed: [default, "{S3}"]}}
      private: {{}}
    aws: {{ip_ranges: {RANGES}}}
"""


def test_the_runtime_judges_with_what_the_entries_stand_for(
        caplog: pytest.LogCaptureFixture) -> None:
    """Only the policy with the entry gains the networks; the EDE's list of allowed
    networks shows the entry as written, not hundreds of prefixes."""
    cfg = load(IN_VPC.replace("{clients}", ", clients: [10.20.0.0/16]"))
    rt = runtime.build(cfg)
    in_vpc, private = rt.policies["in-vpc"], rt.policies["private"]
    assert in_vpc.allowed.contains_packed(bytes([52, 219, 150, 28]))
    assert not in_vpc.allowed.contains_packed(bytes([52, 216, 8, 21]))  # S3, another region
    assert not private.allowed.contains_packed(bytes([52, 219, 150, 28]))
    assert in_vpc.cfg.gateway_networks == ("52.219.128.0/17", "2600:1f70:4000::/40")
    assert in_vpc._allowed_text.endswith(f"fc00::/7, {S3}")


def test_an_entry_that_stands_for_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load(IN_VPC.replace("{clients}", "").replace(S3, "aws:gateway:dynamodb:ap-northeast-1"))
    with caplog.at_level(logging.WARNING, "forwarder.aws"):
        rt = runtime.build(cfg)
    assert rt.policies["in-vpc"].cfg.gateway_networks == ()
    assert ("policy in-vpc: aws:gateway:dynamodb:ap-northeast-1 stands for no network (no "
            "prefix list or published range of dynamodb in ap-northeast-1): answers with its "
            "addresses are violations until it does") in caplog.text


def test_a_rule_without_clients_is_warned_about(ranges: ipranges.IpRanges) -> None:
    (warning,) = gateway.check(load(IN_VPC.replace("{clients}", "")), ranges)
    assert warning.path == "zones[0].policy"
    assert warning.reason.startswith(
        f"policy in-vpc allows {S3}, but rule amazonaws.com has no clients: and answers every "
        "client acl.allow admits (127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12 ...), "
        "on-premises ones too. A Gateway endpoint carries only traffic from inside its VPC")


@pytest.mark.parametrize(("clients", "acl"), [
    (", clients: [10.20.0.0/16]", "[default]"),  # the operator named the VPC's clients
    ("", "[127.0.0.0/8, '::1/128']"),  # the forwarder's own host only
])
def test_rules_whose_clients_are_named_or_local_are_not(
        ranges: ipranges.IpRanges, clients: str, acl: str) -> None:
    text = IN_VPC.replace("{clients}", clients).replace("allow: [default]", f"allow: {acl}")
    assert gateway.check(load(text), ranges) == []


def test_an_entry_the_ranges_cannot_fill_is_warned_about(ranges: ipranges.IpRanges) -> None:
    cfg = load(IN_VPC.replace("{clients}", ", clients: [10.20.0.0/16]").replace(
        S3, "aws:gateway:s3:eu-west-3"))
    (warning,) = gateway.check(cfg, ranges)
    assert (warning.path, warning.reason) == (
        "policies.in-vpc.allowed", f"aws:gateway:s3:eu-west-3: {RANGES} has no S3 range in "
        "eu-west-3, so it stands for no network (answers stay violations)")


def test_a_protection_policy_with_a_gateway_entry_is_warned_about(
        ranges: ipranges.IpRanges) -> None:
    """protection.policy judges names no rule's policy covers, for every client."""
    cfg = load(IN_VPC.replace("{clients}", ", clients: [10.20.0.0/16]")
               + "    protection: {policy: in-vpc}\n")
    (warning,) = gateway.check(cfg, ranges)
    assert warning.path == "protection.policy"
    assert warning.reason.startswith(f"policy in-vpc allows {S3}, but as protection.policy it "
                                     "judges protected names for every client")
