"""The README's IAM policy is exactly what discovery needs: with it a read works; without
any one of its actions the read fails and names that action. moto checks the policy (its
IAM authorization, on for the read only)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from forwarder.aws import api
from forwarder.config import model
from tests.awsfakes import REGION, World

README = (Path(__file__).resolve().parents[3] / "README.md").read_text()
(POLICY,) = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", README, re.S)
             if "ForwarderDiscovery" in block]
ACTIONS = POLICY["Statement"][0]["Action"]


def read_as_user(world: World, policy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Discovery with the credentials of a user that has only *policy*."""
    from moto.core.authorization import enable_iam_authentication

    vpc = world.vpc()
    world.gateway(vpc, "s3")
    world.interface(vpc, "ssm")
    world.inbound(vpc)
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="forwarder")
    iam.put_user_policy(UserName="forwarder", PolicyName="discovery",
                        PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="forwarder")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    with enable_iam_authentication():
        return api.discover(model.AwsSettings(regions=(REGION,)))


@pytest.fixture
def world(moto_world: World) -> World:
    from moto.backends import get_backend

    get_backend("iam").reset()  # type: ignore[call-overload]
    return moto_world


def test_the_documented_policy_is_enough(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = read_as_user(world, POLICY, monkeypatch)
    assert inv.counts() == {"interface": 1, "gateway": 1, "inbound": 1}
    assert inv.prefix_list(f"com.amazonaws.{REGION}.s3") is not None
    assert all(a.startswith(("ec2:Describe", "ec2:Get", "route53resolver:List"))
               for a in ACTIONS)


@pytest.mark.parametrize("action", ACTIONS)
def test_every_documented_action_is_needed(world: World, monkeypatch: pytest.MonkeyPatch,
                                           action: str) -> None:
    policy = json.loads(json.dumps(POLICY))
    policy["Statement"][0]["Action"].remove(action)
    with pytest.raises(api.DiscoveryError, match=f"not authorized to perform: {action}"):
        read_as_user(world, policy, monkeypatch)
