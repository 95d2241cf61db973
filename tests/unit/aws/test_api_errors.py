"""Reading the AWS API when it refuses or cannot be reached, and the guard that keeps
tests off the real AWS. (No moto mock in this module: it would let any call through.)"""

from __future__ import annotations

import pytest

from forwarder.aws import api
from forwarder.config import model
from tests.awsfakes import ACCOUNT, REGION, denying_api

SETTINGS = model.AwsSettings(regions=(REGION,), timeout=2.0)


def test_an_api_error_names_where_the_operation_and_the_code() -> None:
    with denying_api() as (url, calls), pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", url)
        with pytest.raises(api.DiscoveryError) as e:
            api.discover(SETTINGS)
    assert str(e.value) == (f"account {ACCOUNT} region {REGION}: DescribeVpcEndpoints: "
                            "UnauthorizedOperation: You are not authorized to perform this "
                            "operation.")
    assert calls[:2] == ["GetCallerIdentity", "DescribeVpcEndpoints"]


def test_an_unreachable_api_is_an_error() -> None:
    # the suite's AWS_ENDPOINT_URL: a loopback port where nothing listens
    with pytest.raises(api.DiscoveryError, match="Could not connect to the endpoint URL"):
        api.discover(SETTINGS)


@pytest.mark.parametrize(("env", "reason"), [
    ({"AWS_ENDPOINT_URL": None}, "AWS_ENDPOINT_URL is not set"),
    ({"AWS_ENDPOINT_URL": "https://ec2.ap-northeast-1.amazonaws.com"}, "not a loopback"),
    ({"AWS_ENDPOINT_URL_EC2": "http://10.0.0.1:5000"}, "AWS_ENDPOINT_URL_EC2"),
])
def test_tests_are_refused_any_endpoint_off_loopback(monkeypatch: pytest.MonkeyPatch,
                                                     env: dict[str, str | None],
                                                     reason: str) -> None:
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    with pytest.raises(api.DiscoveryError, match=reason):
        api.discover(SETTINGS)
