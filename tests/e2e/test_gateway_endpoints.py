"""Gateway endpoints end to end: a VPC resolver answers S3 names with public addresses (a
CNAME to s3-r-w.REGION.amazonaws.com, as AWS does) that the VPC routes privately through
its S3 Gateway endpoint. A rule for clients inside the VPC allows
`aws:gateway:s3:ap-northeast-1` (from AWS's published ranges, or from the managed prefix
list discovery reads); the same answer for any other client is a violation.

The forwarder's clients are 127.0.0.2 ("inside the VPC") and 127.0.0.1 ("on premises").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder.upstream import health
from tests.awsfakes import REGION, World
from tests.conftest import forwarder_config, http_get, running
from tests.fakes import FakeUpstream, answers

RANGES = Path(__file__).resolve().parents[1] / "fixtures" / "ip-ranges.json"
S3 = f"s3.{REGION}.amazonaws.com"
BUCKET = f"amazon-ssm-{REGION}.{S3}"
EDGE = f"s3-r-w.{REGION}.amazonaws.com"
INSIDE, ONPREM = "127.0.0.2", "127.0.0.1"
ENTRY = f"aws:gateway:s3:{REGION}"
VPC_RESOLVER = {
    (S3, "A"): [f"{S3}. CNAME {EDGE}.", f"{EDGE}. A 52.219.150.28"],
    (BUCKET, "A"): [f"{BUCKET}. CNAME {EDGE}.", f"{EDGE}. A 52.219.150.28"],
    ("s3.us-east-1.amazonaws.com", "A"): ["A 52.216.8.21"],  # S3, but not this region's
    (f"ec2.{REGION}.amazonaws.com", "A"): ["A 54.248.220.10"],  # public, not S3
}


@pytest.fixture
async def vpc() -> Any:
    async with FakeUpstream(answers(VPC_RESOLVER)) as fake:
        yield fake


def setup(vpc: FakeUpstream, canary_policy: str | None = None,
          aws: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = forwarder_config(
        {"vpc": [vpc.addr]},
        zones=[{"match": "amazonaws.com", "clients": [f"{INSIDE}/32"], "upstream": "vpc",
                "policy": "in-vpc"},
               {"match": "amazonaws.com", "upstream": "vpc", "policy": "private-only"}],
        policies={"in-vpc": {"allowed": ["default", ENTRY]}, "private-only": {}},
        aws=aws or {"ip_ranges": str(RANGES)})
    if canary_policy is not None:
        cfg["upstreams"]["vpc"]["canary"] = {"name": S3, "policy": canary_policy}
        cfg["metrics"] = {"enabled": True, "listen": "127.0.0.1:0"}
    return cfg


async def ask(server: Any, transport: str, name: str, source: str) -> dns.message.Message:
    q = dns.message.make_query(name, "A", use_edns=0)
    host, port = server.address(transport)
    if transport == "udp":
        return await dns.asyncquery.udp(q, host, port=port, source=source, timeout=3)
    return await dns.asyncquery.tcp(q, host, port=port, source=source, timeout=3)


def addresses(msg: dns.message.Message) -> list[str]:
    return [rd.address for rrset in msg.answer if rrset.rdtype == dns.rdatatype.A
            for rd in rrset]


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.code), o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


@pytest.mark.parametrize("name", [S3, BUCKET])
async def test_inside_the_vpc_a_gateway_routed_answer_passes(
        vpc: FakeUpstream, transport: str, name: str) -> None:
    """Ask A for S3 (and the SSM agent's bucket) from inside the VPC: the CNAME and its
    public address come back unchanged, with no EDE."""
    async with running(setup(vpc)) as server:
        got = await ask(server, transport, name, INSIDE)
    assert got.rcode() == dns.rcode.NOERROR
    assert addresses(got) == ["52.219.150.28"]
    assert [rrset.rdtype for rrset in got.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert ede(got) == []


async def test_on_premises_the_same_answer_is_blocked(vpc: FakeUpstream, transport: str) -> None:
    async with running(setup(vpc)) as server:
        got = await ask(server, transport, S3, ONPREM)
    assert got.rcode() == dns.rcode.SERVFAIL and got.answer == []
    ((code, text),) = ede(got)
    assert code == 15
    assert text.startswith(f"public address 52.219.150.28 for {EDGE} (CNAME target of {S3}) "
                           "from group vpc violates policy private-only")


@pytest.mark.parametrize("name", ["s3.us-east-1.amazonaws.com", f"ec2.{REGION}.amazonaws.com"])
async def test_inside_the_vpc_other_public_answers_stay_violations(
        vpc: FakeUpstream, name: str) -> None:
    """The entry covers S3 in its region only: another region's S3, or EC2, is blocked."""
    async with running(setup(vpc)) as server:
        got = await ask(server, "udp", name, INSIDE)
    assert got.rcode() == dns.rcode.SERVFAIL
    ((code, text),) = ede(got)
    assert code == 15 and f"for {name} from group vpc violates policy in-vpc" in text


@pytest.mark.parametrize(("policy", "ready"), [("in-vpc", True), ("private-only", False)])
async def test_the_canary_is_judged_with_the_entry(vpc: FakeUpstream, policy: str,
                                                   ready: bool) -> None:
    """A canary judged by the in-VPC policy passes on the Gateway-routed answer; judged by
    the on-premises policy it fails, and /readyz says so."""
    async with running(setup(vpc, canary_policy=policy)) as server:
        await server.health.wait_until(
            lambda: server.health.canary_status("vpc")[0] != health.CANARY_PENDING)
        response = await http_get(server, "/readyz")
    assert (response.status == 200) is ready
    group = response.json()["groups"]["vpc"]
    if ready:
        assert group["canary"] == "ok"
    else:
        assert group["reason"].startswith(f"canary failing: {S3} A resolved to 52.219.150.28")


async def test_with_discovery_the_managed_prefix_list_is_used(
        moto_server: World, vpc: FakeUpstream) -> None:
    """With aws.regions the entry stands for the prefix list the API lists (moto's S3 list
    holds 52.216.0.0/15), whatever the published ranges say."""
    aws = {"regions": [REGION], "refresh": "1h", "timeout": 2}
    async with running(setup(vpc, aws=aws)) as server:
        assert server.inventory is not None
        policy = server.runtime.policies["in-vpc"]
        assert "52.216.0.0/15" in policy.cfg.gateway_networks
        got = await ask(server, "udp", "s3.us-east-1.amazonaws.com", INSIDE)
    assert got.rcode() == dns.rcode.NOERROR and addresses(got) == ["52.216.8.21"]
