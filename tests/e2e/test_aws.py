"""AWS discovery end to end: the forwarder reads moto's server on 127.0.0.1 (through
AWS_ENDPOINT_URL, as boto3 does for any endpoint) and answers real DNS queries from what it
found. Endpoints are created, deleted and replaced between refreshes; the API refuses or
cannot be reached; a state file carries the last good inventory across a start.

The fake upstream `public` plays a resolver that answers AWS names with public addresses.
No query is ever sent to a discovered address (moto's are 10.x): health checks are off and
inbound endpoints are only looked at, never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from forwarder import cli
from forwarder.aws import api, inventory
from forwarder.config import model
from tests.awsfakes import REGION, World, denying_api
from tests.conftest import (
    forwarder_config,
    free_port,
    http_get,
    poll_process,
    query,
    running,
    sample,
    scrape,
)
from tests.fakes import FakeUpstream, answers

S3 = f"s3.{REGION}.amazonaws.com"
BUCKET = f"bucket.{S3}"
RANGES = Path(__file__).resolve().parents[1] / "fixtures" / "ip-ranges.json"
PUBLIC = {(S3, "A"): ["A 52.219.150.28"], (BUCKET, "A"): ["A 52.219.150.29"],
          ("www.example.com", "A"): ["A 93.184.216.34"]}


@pytest.fixture
async def public() -> Any:
    async with FakeUpstream(answers(PUBLIC)) as fake:
        yield fake


def setup(public: FakeUpstream, on_violation: str = "rewrite", metrics: bool = False,
          **aws: Any) -> dict[str, Any]:
    """amazonaws.com goes to `public` under a policy that rewrites from the inventory;
    example.com names come from PrivateLink records; the rest goes to `public`."""
    policy: dict[str, Any] = {"on_violation": on_violation}
    if on_violation == "rewrite":
        policy["rewrite"] = "aws"
    return forwarder_config(
        {"public": [public.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "public", "policy": "p"},
               {"match": "internal.example.com", "records": "aws"},
               {"match": ".", "upstream": "public"}],
        policies={"p": policy},
        aws={"regions": [REGION], "refresh": "1h", "timeout": 2, **aws},
        **({"metrics": {"enabled": True, "listen": "127.0.0.1:0"}} if metrics else {}))


def addresses(response: dns.message.Message) -> list[str]:
    return sorted((rd.address for rrset in response.answer for rd in rrset
                   if rrset.rdtype == dns.rdatatype.A),
                  key=lambda ip: tuple(int(p) for p in ip.split(".")))


def ede(response: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in response.options if o.otype == dns.edns.EDE]


async def test_a_rewrite_follows_an_endpoint_replacement_within_one_refresh(
        moto_server: World, public: FakeUpstream, transport: str) -> None:
    """Ask A s3.REGION.amazonaws.com and a bucket name; the upstream answers public
    addresses; expect the S3 Interface endpoint's ENI addresses (EDE 4). The endpoint is
    deleted and another one created: after one refresh the answers are the new addresses,
    not the cached old ones."""
    vpc = moto_server.vpc()
    first = moto_server.interface(vpc, "s3")
    old = moto_server.addresses(first)
    async with running(setup(public)) as server:
        for name in (S3, BUCKET):
            got = await query(server, transport, name, use_edns=0)
            assert addresses(got) == old
            ((code, text),) = ede(got)
            key = name.replace("bucket", "*")
            assert code == 4 and f"rewritten to {', '.join(old)} (rewrite key {key})" in text

        moto_server.delete(first)
        second = moto_server.interface(vpc, "s3")
        assert await server.aws.refresh()

        new = moto_server.addresses(second)
        assert new != old
        for name in (S3, BUCKET):
            got = await query(server, transport, name)
            assert addresses(got) == new


async def test_the_background_refresh_picks_up_a_new_endpoint(
        moto_server: World, public: FakeUpstream) -> None:
    """With no S3 endpoint the rewrite has no key (then: servfail); one created later is
    used after the next background refresh (every `refresh`)."""
    vpc = moto_server.vpc()
    cfg = setup(public)
    cfg["aws"]["refresh"] = 1
    async with running(cfg) as server:
        got = await query(server, "udp", S3, use_edns=0)
        assert got.rcode() == dns.rcode.SERVFAIL
        assert f"no rewrite key matches {S3}" in ede(got)[0][1]

        endpoint = moto_server.interface(vpc, "s3")
        assert await asyncio.wait_for(server.aws.next_attempt(), 10.0)
        got = await query(server, "udp", S3)
        assert addresses(got) == moto_server.addresses(endpoint)


async def test_an_api_error_keeps_the_last_good_inventory(
        moto_server: World, public: FakeUpstream, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The API starts refusing: the refresh fails, is logged and counted, and the rewrite
    keeps the addresses read before; /readyz stays ready and shows the error."""
    endpoint = moto_server.interface(moto_server.vpc(), "s3")
    async with running(setup(public, metrics=True)) as server:
        before = await scrape(server)
        with denying_api() as (url, _calls):
            monkeypatch.setenv("AWS_ENDPOINT_URL", url)
            assert not await server.aws.refresh()
        after = await scrape(server)
        assert sample(after, "forwarder_aws_refreshes_total", result="failure") == \
            sample(before, "forwarder_aws_refreshes_total", result="failure") + 1
        assert "AWS inventory read failed: account 123456789012 region ap-northeast-1: " \
               "DescribeVpcEndpoints: UnauthorizedOperation" in caplog.text
        got = await query(server, "udp", S3)
        assert addresses(got) == moto_server.addresses(endpoint)
        ready = await http_get(server, "/readyz")
        assert ready.status == 200
        assert "UnauthorizedOperation" in ready.json()["aws"]["last_error"]


async def test_unreachable_at_start_without_a_state_file(public: FakeUpstream) -> None:
    """AWS_ENDPOINT_URL points where nothing listens and there is no state file: the
    forwarder starts and serves what needs no inventory; what needs it fails closed with
    an EDE saying why; /readyz says the inventory is not loaded."""
    async with running(setup(public, metrics=True)) as server:
        got = await query(server, "udp", "www.example.com")
        assert addresses(got) == ["93.184.216.34"]
        got = await query(server, "udp", S3, use_edns=0)
        assert got.rcode() == dns.rcode.SERVFAIL
        assert f"no rewrite key matches {S3}" in ede(got)[0][1]
        got = await query(server, "tcp", "internal.example.com", use_edns=0)
        assert got.rcode() == dns.rcode.SERVFAIL
        assert ede(got)[0][1] == "upstream group aws-inventory-not-loaded has no servers"
        ready = await http_get(server, "/readyz")
        assert ready.status == 503
        assert ready.json()["reason"] == (
            "group aws-inventory-not-loaded: no healthy server: all 0 down; aws: AWS "
            "inventory not loaded: account lookup (STS): Could not connect to the endpoint "
            'URL: "http://127.0.0.1:9/"')


async def test_a_stale_state_file_at_start_makes_readyz_fail(
        public: FakeUpstream, tmp_path: Path) -> None:
    """AWS unreachable, a state file read two hours ago, stale_after 1h: the forwarder
    serves from it, and /readyz reports the inventory stale."""
    state = tmp_path / "aws-inventory.json"
    inventory.write_state(str(state), inventory.Inventory(fetched_at=0.0))
    cfg = setup(public, metrics=True, state_file=str(state), stale_after="1h")
    async with running(cfg) as server:
        assert server.inventory is not None and server.inventory.source == "state_file"
        ready = await http_get(server, "/readyz")
        assert ready.status == 503
        report = ready.json()["aws"]
        assert report["stale"] and report["source"] == "state_file"
        assert report["reason"].startswith("AWS inventory is stale: read ")


async def test_a_blocked_answer_names_the_service_region_and_cause(
        moto_server: World, public: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    """A VPC with only an S3 Gateway endpoint; policy servfail; ip_ranges set: the EDE
    text and the log line say why (first: what to fix) and which AWS range the address is
    in."""
    vpc = moto_server.vpc()
    gateway = moto_server.gateway(vpc, "s3")
    cause = (f"{vpc.id} has an S3 Gateway endpoint ({gateway}), which does not change DNS; "
             "on-premises clients need an S3 Interface endpoint")
    where = ("52.219.150.28 is in AWS's published S3 range for ap-northeast-1 "
             "(52.219.128.0/17)")
    async with running(setup(public, on_violation="servfail", ip_ranges=str(RANGES))) as server:
        with caplog.at_level(logging.WARNING, "forwarder.policy"):
            got = await query(server, "udp", S3, use_edns=0)
    assert got.rcode() == dns.rcode.SERVFAIL
    ((code, text),) = ede(got)
    assert code == 15
    assert text == (f"public address 52.219.150.28 for {S3} from group public violates policy "
                    f"p; answered SERVFAIL; {cause}; {where}")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "forwarder.policy"]
    assert where in line and cause in line


async def test_privatelink_names_are_served_from_the_inventory(
        moto_server: World, public: FakeUpstream) -> None:
    """A PrivateLink service whose endpoint has private DNS off: its private DNS name is
    answered (AA) with the endpoint's addresses; other names under the rule get NXDOMAIN."""
    vpc = moto_server.vpc()
    service = moto_server.privatelink_service(vpc, "api.internal.example.com")
    endpoint = moto_server.interface(vpc, service, private_dns=False)
    async with running(setup(public)) as server:
        got = await query(server, "udp", "api.internal.example.com")
        assert got.flags & dns.flags.AA
        assert addresses(got) == moto_server.addresses(endpoint)
        other = await query(server, "udp", "nope.internal.example.com")
        assert other.rcode() == dns.rcode.NXDOMAIN


async def test_inbound_endpoint_servers_follow_the_inventory(
        moto_server: World, public: FakeUpstream) -> None:
    """`aws:inbound/NAME` servers are the endpoint's addresses; after it is replaced by one
    with other addresses, one refresh changes the group (and /readyz lists them)."""
    vpc = moto_server.vpc()
    old = moto_server.inbound(vpc, ips=["10.0.1.10", "10.0.2.10"])
    cfg = setup(public, metrics=True)
    cfg["upstreams"]["r53"] = {"servers": ["aws:inbound/onprem-in"],
                               "health_check": {"enabled": False}}
    async with running(cfg) as server:
        assert [s.label for s in server.runtime.groups["r53"].servers] == [
            "10.0.1.10:53", "10.0.2.10:53"]
        moto_server.resolver.delete_resolver_endpoint(ResolverEndpointId=old)
        moto_server.inbound(vpc, ips=["10.0.1.20", "10.0.2.20"])
        assert await server.aws.refresh()
        assert [s.label for s in server.runtime.groups["r53"].servers] == [
            "10.0.1.20:53", "10.0.2.20:53"]
        report = (await http_get(server, "/readyz")).json()
        assert report["aws"]["missing"] == [] and report["aws"]["endpoints"]["inbound"] == 1


async def test_metrics_show_the_inventory(moto_server: World, public: FakeUpstream) -> None:
    vpc = moto_server.vpc()
    moto_server.interface(vpc, "s3")
    moto_server.interface(vpc, "ssm")
    moto_server.gateway(vpc, "dynamodb")
    async with running(setup(public, metrics=True)) as server:
        samples = await scrape(server)
        assert sample(samples, "forwarder_aws_endpoints", kind="interface") == 2
        assert sample(samples, "forwarder_aws_endpoints", kind="gateway") == 1
        assert sample(samples, "forwarder_aws_endpoints", kind="inbound") == 0
        assert 0 <= sample(samples, "forwarder_aws_inventory_age_seconds") < 60
        assert sample(samples, "forwarder_aws_refreshes_total", result="success") >= 1


def test_aws_check_names_the_gateway_only_s3_vpc(moto_server: World, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`forwarder aws check -c FILE` on moto's data: S3 forwarded to an inbound endpoint
    whose VPC has only an S3 Gateway endpoint is an error, with the fix; exit code 3."""
    vpc = moto_server.vpc()
    gateway = moto_server.gateway(vpc, "s3")
    inbound = moto_server.inbound(vpc)
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump({
        "upstreams": {"r53": {"servers": [f"aws:inbound/{inbound}"]}},
        "zones": [{"match": "amazonaws.com", "upstream": "r53"},
                  {"match": ".", "action": "refuse"}],
        "aws": {"regions": [REGION]}}))
    assert cli.main(["aws", "check", "-c", str(path)]) == 3
    out = capsys.readouterr().out
    assert "error gateway-only: zones[0] (match amazonaws.com)" in out
    assert f"inbound endpoint {inbound} in {vpc.id}, which has only an S3 Gateway " \
           f"endpoint ({gateway})" in out
    assert f"fix: create an S3 Interface endpoint in {vpc.id}" in out
    assert out.rstrip().endswith("1 finding(s): 1 error")

    assert cli.main(["aws", "inventory", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{gateway}  S3  {vpc.id}  available" in out
    assert f"{inbound} (onprem-in)  {vpc.id}  OPERATIONAL" in out
    assert f"AWS-managed prefix lists in {REGION} (what Gateway endpoints route): 2" in out
    assert f"com.amazonaws.{REGION}.s3  52.216.0.0/15, " in out


def test_aws_commands_fall_back_to_the_state_file(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The API cannot be reached: the commands use the state file and say so; without
    one they fail with exit code 1."""
    path = tmp_path / "forwarder.yaml"
    config = {"zones": [{"match": ".", "action": "refuse"}], "aws": {"regions": [REGION],
                                                                     "timeout": 1}}
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["aws", "inventory", "-c", str(path)]) == 1
    assert "cannot read the AWS API: " in capsys.readouterr().err

    state = tmp_path / "state.json"
    inventory.write_state(str(state), inventory.Inventory(fetched_at=1.0))
    config["aws"]["state_file"] = str(state)  # type: ignore[index]
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["aws", "check", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"using {state}, read " in captured.err
    assert "inventory from the state file" in captured.out
    assert captured.out.rstrip().endswith("no problems found")


@pytest.mark.slow
async def test_the_process_starts_and_serves_from_the_state_file(
        moto_server: World, public: FakeUpstream, tmp_path: Path) -> None:
    """`forwarder run` with the AWS API unreachable and a state file written from moto's
    data earlier: it starts, and answers the rewrite and the PrivateLink name from it."""
    vpc = moto_server.vpc()
    s3 = moto_server.interface(vpc, "s3")
    service = moto_server.privatelink_service(vpc, "api.internal.example.com")
    link = moto_server.interface(vpc, service, private_dns=False)
    state = tmp_path / "aws-inventory.json"
    inventory.write_state(str(state), api.discover(model.AwsSettings(regions=(REGION,))))

    port = free_port()
    cfg = setup(public, state_file=str(state))
    cfg["listen"] = [{"address": "127.0.0.1", "port": port}]
    cfg["allow_root"] = True  # CI runs as root; nothing here needs dropping privileges
    path, log = tmp_path / "forwarder.yaml", tmp_path / "log"
    path.write_text(yaml.safe_dump(cfg))
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens there
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "forwarder", "run", "-c", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            env={**os.environ, **env})
    try:
        async def ask(name: str) -> dns.message.Message | None:
            q = dns.message.make_query(name, "A")
            return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=0.5)

        got = await poll_process(lambda: ask(S3), proc, log)
        assert addresses(got) == moto_server.addresses(s3)
        got = await ask("api.internal.example.com")
        assert got is not None and addresses(got) == moto_server.addresses(link)
        assert f"starting from the AWS inventory in {state}" in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 10.0)



async def test_a_reload_keeps_the_inventory_and_reads_it_again(
        moto_server: World, public: FakeUpstream, tmp_path: Path) -> None:
    """SIGHUP with a changed file: the new runtime has the inventory at once (the rewrite
    still answers), and the reload starts a read that sees what changed since."""
    vpc = moto_server.vpc()
    first = moto_server.interface(vpc, "s3")
    path = tmp_path / "forwarder.yaml"
    cfg = setup(public)
    path.write_text(yaml.safe_dump(cfg))
    async with running(cfg, str(path)) as server:
        assert addresses(await query(server, "udp", S3)) == moto_server.addresses(first)
        ssm = moto_server.interface(vpc, "ssm")
        cfg["policies"]["p"]["ttl"] = 5
        path.write_text(yaml.safe_dump(cfg))
        read = server.aws.next_attempt()
        assert await server.reload()
        assert addresses(await query(server, "udp", S3)) == moto_server.addresses(first)
        assert await asyncio.wait_for(read, 10.0)
        assert [e.id for e in server.inventory.interface] == [first, ssm]


async def test_explain_reads_the_inventory(moto_server: World, public: FakeUpstream) -> None:
    """`forwarder explain` answers an `aws:` reference as the server would."""
    import io

    from forwarder import config as config_mod
    from forwarder import explain
    from forwarder.aws import commands

    endpoint = moto_server.interface(moto_server.vpc(), "s3")
    cfg = config_mod.from_data(setup(public), "t.yaml")
    assert cfg.aws is not None
    out = io.StringIO()
    inv = commands.obtain(cfg.aws)
    assert await explain.explain(cfg, S3, "A", out=out, inventory=inv) == 0
    assert f"rewritten to {', '.join(moto_server.addresses(endpoint))}" in out.getvalue()
