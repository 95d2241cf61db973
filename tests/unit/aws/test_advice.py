"""What a blocked answer says to do next: the regional name for S3's global one, the
Gateway-endpoint question for a name the group's canary watches, and the inventory's exact
cause instead when there is one."""

from __future__ import annotations

import textwrap

import pytest

from forwarder import config
from forwarder.aws import advice, diagnosis, rules
from forwarder.aws.inventory import Inventory
from tests.unit.aws import builders as b

GATEWAY_HINT = ("the resolver for this rule (group r53) returned a public S3 address: is this "
                "VPC's S3 endpoint a Gateway endpoint? On-premises clients need an Interface "
                "endpoint")


def explain(name: str, canary: str | None = "s3.ap-northeast-1.amazonaws.com",
            rewrite: str = "", inv: Inventory | None = None, group: str = "r53") -> str | None:
    canary_text = f", canary: {{name: {canary}}}" if canary else ""
    rewrite_text = (f"on_violation: rewrite, rewrite: {{{rewrite}: {{A: [10.3.1.15]}}}}"
                    if rewrite else "")
    aws = f"aws: {{regions: [{b.REGION}]}}" if inv is not None else ""
    servers = "aws:inbound/rslvr-in-0001" if inv is not None else "10.10.0.10"
    cfg = config.load_text(textwrap.dedent(f"""
        upstreams:
          r53: {{servers: [{servers}]{canary_text}}}
        zones: [{{match: ., upstream: r53, policy: p}}]
        policies:
          p: {{then: servfail, {rewrite_text}}}
        {aws}
    """), "t.yaml")
    concrete = rules.apply(cfg, inv) if inv is not None else cfg
    diagnosed = diagnosis.build(concrete, inv) if inv is not None else None
    return advice.build(concrete, diagnosed).explain(name, ("52.219.150.28",), group)


@pytest.mark.parametrize(("name", "expected"), [
    ("mybucket.s3.amazonaws.com",
     "use the regional name mybucket.s3.ap-northeast-1.amazonaws.com if the bucket is in "
     "ap-northeast-1: S3's global name has no private address"),
    ("s3.amazonaws.com", "use the regional name s3.ap-northeast-1.amazonaws.com if the bucket "
                         "is in ap-northeast-1: S3's global name has no private address"),
    ("a.b.s3-external-1.amazonaws.com", "use a.b.s3.us-east-1.amazonaws.com: legacy S3 names "
                                        "have no private DNS"),
    ("logs.s3-eu-west-1.amazonaws.com", "use logs.s3.eu-west-1.amazonaws.com: legacy S3 names "
                                        "have no private DNS"),
])
def test_s3_global_and_legacy_names_get_the_regional_one(name: str, expected: str) -> None:
    """The one region with a private S3 path here (the canary's) is the one suggested."""
    assert explain(name) == expected


def test_with_several_private_s3_regions_the_bucket_decides() -> None:
    text = explain("mybucket.s3.amazonaws.com",
                   rewrite='"*.s3.ap-northeast-3.amazonaws.com"')
    assert text == ("use the regional name mybucket.s3.REGION.amazonaws.com with the bucket's "
                    "region (private here: ap-northeast-1, ap-northeast-3): S3's global name "
                    "has no private address")
    assert explain("mybucket.s3.amazonaws.com", canary=None) == (
        "use the regional name mybucket.s3.REGION.amazonaws.com with the bucket's region: "
        "S3's global name has no private address")


@pytest.mark.parametrize("name", ["s3.ap-northeast-1.amazonaws.com",
                                  "amazon-ssm-ap-northeast-1.s3.ap-northeast-1.amazonaws.com"])
def test_a_public_answer_for_what_the_canary_watches_asks_about_a_gateway_endpoint(
        name: str) -> None:
    assert explain(name) == GATEWAY_HINT


@pytest.mark.parametrize(("name", "group", "canary"), [
    ("s3.us-east-1.amazonaws.com", "r53", "s3.ap-northeast-1.amazonaws.com"),  # another region
    ("sts.ap-northeast-1.amazonaws.com", "r53", "s3.ap-northeast-1.amazonaws.com"),
    ("s3.ap-northeast-1.amazonaws.com", "corp", "s3.ap-northeast-1.amazonaws.com"),
    ("s3.ap-northeast-1.amazonaws.com", "r53", None),
])
def test_other_names_and_groups_get_no_guess(name: str, group: str, canary: str | None) -> None:
    assert explain(name, canary=canary, group=group) is None


def test_a_canary_of_another_service_names_its_interface_endpoint() -> None:
    assert explain("ssm.ap-northeast-1.amazonaws.com",
                   canary="ssm.ap-northeast-1.amazonaws.com") == (
        "the resolver for this rule (group r53) returned a public SSM address for the service "
        "its canary watches: the VPC it answers for has no SSM Interface endpoint with "
        "private DNS on")


def test_the_inventorys_exact_cause_replaces_the_guess() -> None:
    inv = b.inventory(b.gateway(), b.inbound())
    assert explain("s3.ap-northeast-1.amazonaws.com", inv=inv) == (
        "vpc-0abc has an S3 Gateway endpoint (vpce-0gw), which does not change DNS; "
        "on-premises clients need an S3 Interface endpoint")


def test_an_s3_interface_endpoint_in_the_inventory_is_a_private_s3_path() -> None:
    inv = b.inventory(b.interface("vpce-0s3"), b.inbound())
    text = explain("mybucket.s3.amazonaws.com", canary=None, inv=inv)
    assert text is not None and text.startswith(
        "use the regional name mybucket.s3.ap-northeast-1.amazonaws.com if the bucket is in "
        "ap-northeast-1")
