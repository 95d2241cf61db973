"""What `protected: default` with `unprotected: default` protects: AWS service endpoints,
and not the names AWS gives to customers' own resources (README "What is protected")."""

from __future__ import annotations

import pytest

from forwarder.config import model
from forwarder.dns import names
from forwarder.stages.policy.judge import ProtectedNames

DEFAULTS = ProtectedNames(model.DEFAULT_PROTECTED, model.DEFAULT_UNPROTECTED)

SERVICE_ENDPOINTS = [
    "s3.ap-northeast-1.amazonaws.com", "my-bucket.s3.ap-northeast-1.amazonaws.com",
    "s3.amazonaws.com", "bucket.s3.amazonaws.com", "s3.dualstack.us-east-1.amazonaws.com",
    "ssm.ap-northeast-1.amazonaws.com", "ssmmessages.ap-northeast-1.amazonaws.com",
    "ec2messages.ap-northeast-1.amazonaws.com", "sts.amazonaws.com",
    "sts.ap-northeast-1.amazonaws.com", "ec2.us-east-1.amazonaws.com", "ec2.amazonaws.com",
    "ec2.us-west-2.api.aws", "kms.eu-west-1.amazonaws.com", "rds.us-east-1.amazonaws.com",
    "elasticloadbalancing.us-east-1.amazonaws.com", "redshift.us-west-2.amazonaws.com",
    "elasticache.us-east-1.amazonaws.com", "es.us-east-1.amazonaws.com",
    "eks.us-east-1.amazonaws.com", "oidc.eks.us-east-1.amazonaws.com",
    "kafka.us-east-1.amazonaws.com", "mq.us-east-2.amazonaws.com",
    "transfer.us-east-1.amazonaws.com", "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
    "execute-api.us-east-1.amazonaws.com", "123456789012.dkr.ecr.us-east-1.amazonaws.com",
    "vpce-0abc-xyz.s3.ap-northeast-1.vpce.amazonaws.com", "s3.cn-north-1.amazonaws.com.cn",
    "sts.cn-north-1.api.amazonwebservices.com.cn", "rds.cn-north-1.amazonaws.com.cn",
]
CUSTOMER_RESOURCES = [
    ("my-alb-1234567890.us-east-1.elb.amazonaws.com", "*.elb.amazonaws.com"),
    ("internal-my-alb-1234567890.us-east-1.elb.amazonaws.com", "*.elb.amazonaws.com"),
    ("dualstack.my-alb-1234567890.us-east-1.elb.amazonaws.com", "*.elb.amazonaws.com"),
    ("my-nlb-1234567890abcdef.elb.us-east-2.amazonaws.com", "*.elb.*.amazonaws.com"),
    ("us-east-2b.my-nlb-1234567890abcdef.elb.us-east-2.amazonaws.com", "*.elb.*.amazonaws.com"),
    ("my-alb-1.cn-north-1.elb.amazonaws.com.cn", "*.elb.amazonaws.com.cn"),
    ("ec2-54-210-1-2.compute-1.amazonaws.com", "ec2-*.compute-1.amazonaws.com"),
    ("ec2-52-54-55-66.ap-southeast-2.compute.amazonaws.com", "ec2-*.*.compute.amazonaws.com"),
    ("ec2-54-223-1-2.cn-north-1.compute.amazonaws.com.cn", "ec2-*.*.compute.amazonaws.com.cn"),
    ("my-env.cn-north-1.eb.amazonaws.com.cn", "*.eb.amazonaws.com.cn"),
    ("mydb.123456789012.us-east-1.rds.amazonaws.com", "*.rds.amazonaws.com"),
    ("mycluster.cluster-ro-c7tj4example.us-east-1.rds.amazonaws.com", "*.rds.amazonaws.com"),
    ("myproxy.proxy-c7tj4example.us-east-1.rds.amazonaws.com", "*.rds.amazonaws.com"),
    ("examplecluster.abc123xyz789.us-west-2.redshift.amazonaws.com", "*.redshift.amazonaws.com"),
    ("wg.123456789012.us-east-1.redshift-serverless.amazonaws.com",
     "*.redshift-serverless.amazonaws.com"),
    ("redis-01.7abc2d.0001.usw2.cache.amazonaws.com", "*.cache.amazonaws.com"),
    ("search-my-domain-abcdefgh.us-east-1.es.amazonaws.com", "*.es.amazonaws.com"),
    ("abcdef123456.us-east-1.aoss.amazonaws.com", "*.aoss.amazonaws.com"),
    ("d-abcde12345.execute-api.us-east-1.amazonaws.com", "d-*.execute-api.*.amazonaws.com"),
    ("ABCDEF0123456789.gr7.us-east-1.eks.amazonaws.com", "*.eks.amazonaws.com"),
    ("b-1.mycluster.abc123.c2.kafka.us-east-1.amazonaws.com", "*.kafka.*.amazonaws.com"),
    ("b-1234a5b6-78cd-901e-2fgh-3i45j6k178l9.mq.us-east-2.amazonaws.com",
     "*.mq.*.amazonaws.com"),
    ("my-bucket.s3-website-us-east-1.amazonaws.com", "*.s3-website-*.amazonaws.com"),
    ("my-bucket.s3-website.eu-central-1.amazonaws.com", "*.s3-website.*.amazonaws.com"),
    ("s-1234567890abcdef0.server.transfer.us-east-1.amazonaws.com",
     "*.server.transfer.*.amazonaws.com"),
    ("cvpn-endpoint-0102bc4c2eexample.prod.clientvpn.us-west-2.amazonaws.com",
     "*.clientvpn.*.amazonaws.com"),
    ("g-abcdef1234.grafana-workspace.us-east-1.amazonaws.com",
     "*.grafana-workspace.*.amazonaws.com"),
]


@pytest.mark.parametrize("name", SERVICE_ENDPOINTS)
def test_service_endpoints_are_protected(name: str) -> None:
    assert DEFAULTS.lookup(names.from_text(name)) is not None


@pytest.mark.parametrize(("name", "entry"), CUSTOMER_RESOURCES)
def test_customer_resources_are_left_out_by_their_entry(name: str, entry: str) -> None:
    wire_name = names.from_text(name)
    assert DEFAULTS.lookup(wire_name) is None
    suffix, pattern = DEFAULTS.classify(wire_name)
    assert suffix is not None and pattern == entry


def test_every_default_entry_is_exercised() -> None:
    assert {entry for _, entry in CUSTOMER_RESOURCES} == set(model.DEFAULT_UNPROTECTED)
