"""The configuration's inventory references made concrete: inbound servers, rewrite
targets, PrivateLink records, and what stands in before any inventory was read."""

from __future__ import annotations

import textwrap

from forwarder import config
from forwarder.aws import rules
from forwarder.aws.inventory import EndpointService
from forwarder.config import model
from forwarder.dns.wire import TYPE_A
from tests.unit.aws import builders as b

CONFIG = """
upstreams:
  r53: {servers: [10.9.9.9, aws:inbound/rslvr-in-0001, aws:inbound/rslvr-in-gone]}
  by-name: {servers: [aws:inbound/onprem-in]}
zones:
  - {match: amazonaws.com, upstream: r53, policy: to-endpoints}
  - {match: example.com, records: aws}
  - {match: ., upstream: r53}
policies:
  to-endpoints: {on_violation: rewrite, rewrite: aws, allowed: [10.0.0.0/8]}
aws: {regions: [ap-northeast-1]}
"""


def cfg() -> model.Config:
    return config.load_text(textwrap.dedent(CONFIG), "t.yaml")


def test_inbound_references_become_the_endpoint_addresses() -> None:
    out = rules.apply(cfg(), b.inventory(b.inbound()))
    r53, by_name = out.group_named("r53"), out.group_named("by-name")
    assert r53 is not None and by_name is not None
    assert [s.label for s in r53.servers] == ["10.9.9.9:53", "10.0.1.10:53", "10.0.2.10:53"]
    assert [s.label for s in by_name.servers] == ["10.0.1.10:53", "10.0.2.10:53"]


def test_rewrite_aws_maps_each_service_name_to_its_endpoint() -> None:
    inv = b.inventory(
        b.interface("vpce-0s3"), b.interface("vpce-0ssm", b.SSM, ips=("10.0.1.30",)),
        services=(EndpointService(b.SSM, b.REGION, "amazon",
                                  ("ssm.ap-northeast-1.amazonaws.com",)),))
    policy = rules.apply(cfg(), inv).policy_named("to-endpoints")
    assert policy is not None
    assert dict(policy.rewrite) == {
        "s3.ap-northeast-1.amazonaws.com": model.RewriteTarget(("10.0.1.15", "10.0.2.15")),
        "*.s3.ap-northeast-1.amazonaws.com": model.RewriteTarget(("10.0.1.15", "10.0.2.15")),
        "ssm.ap-northeast-1.amazonaws.com": model.RewriteTarget(("10.0.1.30",)),
    }


def test_the_endpoint_beside_an_inbound_endpoint_with_private_dns_wins() -> None:
    """Several endpoints for one service: stable order of preference, whatever the listing."""
    far = b.interface("vpce-0aaa", vpc="vpc-far", ips=("10.8.0.1",))
    off = b.interface("vpce-0bbb", ips=("10.0.9.9",), private_dns=False)
    near = b.interface("vpce-0ccc", ips=("10.0.1.20",))
    gone = b.interface("vpce-0000", ips=("10.0.7.7",), state="deleting")
    for order in ((far, off, near, gone), (gone, near, off, far)):
        chosen = rules.chosen_endpoints(b.inventory(*order, b.inbound()))
        assert chosen[b.S3].id == "vpce-0ccc"


def test_rewrite_targets_keep_only_allowed_addresses() -> None:
    inv = b.inventory(b.interface("vpce-0s3", ips=("10.0.1.15", "172.16.0.5")),
                      b.interface("vpce-0ssm", b.SSM, ips=("192.168.0.5",)))
    policy = rules.apply(cfg(), inv).policy_named("to-endpoints")
    assert policy is not None
    assert {t.a for _, t in policy.rewrite} == {("10.0.1.15",)}  # nothing for SSM


def test_privatelink_names_with_private_dns_off_become_local_records() -> None:
    services = (EndpointService(b.LINK, b.REGION, "210987654321", ("internal.example.com",)),
                EndpointService(f"{b.LINK}1", b.REGION, "210987654321", ("api.other.org",)))
    inv = b.inventory(
        b.interface("vpce-0link", b.LINK, ips=("10.0.1.40", "10.0.2.40"), private_dns=False),
        b.interface("vpce-0on", f"{b.LINK}1", ips=("10.0.1.50",), private_dns=False),
        services=services)
    rule = rules.apply(cfg(), inv).rules[1]
    assert rule.action is model.RuleAction.LOCAL
    assert rule.records == (
        model.LocalRecord("internal.example.com", TYPE_A, "10.0.1.40", 300),
        model.LocalRecord("internal.example.com", TYPE_A, "10.0.2.40", 300))


def test_without_an_inventory_the_references_fail_closed() -> None:
    out = rules.apply(cfg(), None)
    r53 = out.group_named("r53")
    assert r53 is not None and [s.label for s in r53.servers] == ["10.9.9.9:53"]
    assert out.group_named("by-name").servers == ()  # type: ignore[union-attr]
    policy = out.policy_named("to-endpoints")
    assert policy is not None and policy.rewrite == ()
    rule = out.rules[1]
    assert (rule.action, rule.upstream) == (model.RuleAction.FORWARD, rules.UNAVAILABLE)
    assert out.group_named(rules.UNAVAILABLE) == model.UpstreamGroup(rules.UNAVAILABLE, ())


def test_a_config_without_the_section_is_left_alone() -> None:
    plain = config.load_text("zones: [{match: ., action: refuse}]", "t.yaml")
    assert rules.apply(plain, b.inventory(b.inbound())) is plain
