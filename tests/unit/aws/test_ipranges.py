"""AWS's published ip-ranges.json: which service and region a public address is in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from forwarder.aws import ipranges

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "ip-ranges.json"


@pytest.fixture
def ranges() -> ipranges.IpRanges:
    return ipranges.load(str(FIXTURE))


@pytest.mark.parametrize(("address", "text"), [
    ("52.219.150.28", "52.219.150.28 is in AWS's published S3 range for ap-northeast-1 "
                      "(52.219.128.0/17)"),
    ("52.217.1.1", "52.217.1.1 is in AWS's published S3 range for us-east-1 (52.216.0.0/15)"),
    ("54.249.3.4", "54.249.3.4 is in AWS's published EC2 range for ap-northeast-1 "
                   "(54.248.0.0/15)"),
    ("52.119.219.193", "52.119.219.193 is in AWS's published AWS range for ap-northeast-1 "
                       "(52.119.219.0/24)"),
    ("13.33.0.1", "13.33.0.1 is in AWS's published CLOUDFRONT range (13.32.0.0/15)"),
    ("2600:1f70:4012::1", "2600:1f70:4012::1 is in AWS's published S3 range for "
                          "ap-northeast-1 (2600:1f70:4000::/40)"),
])
def test_an_address_is_named_by_its_most_specific_service(ranges: ipranges.IpRanges,
                                                          address: str, text: str) -> None:
    """A named service beats AMAZON (which covers everything); among AMAZON-only ranges the
    longest prefix wins; GLOBAL ranges have no region."""
    found = ranges.lookup(address)
    assert found is not None
    assert found.describe(address) == text


def test_ipv4_mapped_addresses_are_looked_up_as_ipv4(ranges: ipranges.IpRanges) -> None:
    found = ranges.lookup("::ffff:52.219.150.28")
    assert found is not None and found.service == "S3"


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:db8::1", "not an address"])
def test_an_address_outside_the_ranges_is_not_found(ranges: ipranges.IpRanges,
                                                    address: str) -> None:
    assert ranges.lookup(address) is None


def test_the_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "ip-ranges.json"
    path.write_text(FIXTURE.read_text())
    first = ipranges.load(str(path))
    assert ipranges.load(str(path)) is first
    data = json.loads(FIXTURE.read_text())
    data["prefixes"], data["ipv6_prefixes"] = data["prefixes"][:2], []
    path.write_text(json.dumps(data))
    os.utime(path, ns=(1, 1))  # a different modification time, whatever the clock
    second = ipranges.load(str(path))
    assert second is not first and len(second) == 2


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot read"),
    ("{", "not JSON"),
    ('{"prefixes": [{"ip_prefix": "52.219.0.0/16"}]}', "not AWS's ip-ranges.json format"),
    ('{"prefixes": [{"ip_prefix": "nope", "service": "S3", "region": "x"}]}',
     "not AWS's ip-ranges.json format"),
    ("[]", "not AWS's ip-ranges.json format"),
])
def test_a_bad_file_is_an_error_naming_it(tmp_path: Path, content: str | None,
                                          reason: str) -> None:
    path = tmp_path / "ip-ranges.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ipranges.IpRangesError, match=reason) as e:
        ipranges.load(str(path))
    assert str(path) in str(e.value)


def test_addresses_of_one_range_are_described_once(ranges: ipranges.IpRanges) -> None:
    found = ranges.lookup("52.216.8.21")
    assert found is not None
    assert found.describe("52.216.8.21", "52.216.40.5") == (
        "52.216.8.21 and 52.216.40.5 are in AWS's published S3 range for us-east-1 "
        "(52.216.0.0/15)")
