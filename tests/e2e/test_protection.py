"""Protection on every path, with the configuration operators write: a policy on the AWS
rule only, and `.` to the corporate resolvers without one (config/onprem-route53.yaml).

The fake upstream `corp` plays the corporate resolvers (public DNS: AWS names answer with
public addresses); `r53` plays an inbound endpoint that answers what each test gives it.
Everything goes over real sockets, UDP and TCP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest

from forwarder import config as config_mod
from forwarder import metrics, runtime
from forwarder.errors import ConfigError
from tests.conftest import forwarder_config, logged_queries, query, running
from tests.fakes import FakeUpstream, answers

BUCKET = "my-bucket.s3.ap-northeast-1.amazonaws.com"
FILES = "files.corp.example.com"
ALB = "my-alb-1234567890.ap-northeast-1.elb.amazonaws.com"
NLB = "my-nlb-0123456789abcdef.elb.ap-northeast-1.amazonaws.com"
EC2_DNS = "ec2-54-210-1-2.compute-1.amazonaws.com"
RDS = "mydb.c7tj4example.ap-northeast-1.rds.amazonaws.com"

CORP = {
    (FILES, "A"): [f"{FILES}. CNAME {BUCKET}.", f"{BUCKET}. A 52.219.150.29"],
    ("app.corp.example.com", "A"): [f"app.corp.example.com. CNAME {ALB}.", f"{ALB}. A 54.95.1.2"],
    ("www.example.org", "A"): ["A 93.184.215.14"],
    (BUCKET, "A"): ["A 52.219.150.29"],
    ("other.example.net", "A"): [f"other.example.net. CNAME {BUCKET}.",
                                 f"{BUCKET}. A 52.219.150.29"],
}
R53 = {
    (BUCKET, "A"): ["A 10.0.1.15"],
    (ALB, "A"): ["A 54.95.1.2", "A 54.95.3.4"],
    (NLB, "A"): ["A 3.112.1.1"],
    (EC2_DNS, "A"): ["A 54.210.1.2"],
    (RDS, "A"): ["A 13.112.5.6"],
    ("ec2.ap-northeast-1.amazonaws.com", "A"): ["A 52.95.1.1"],
    ("ssm.ap-northeast-1.amazonaws.com", "A"): ["A 52.119.1.1"],
    ("sts.ap-northeast-1.amazonaws.com", "A"): ["A 52.119.2.2"],
}


def operator(corp: FakeUpstream, r53: FakeUpstream, **policy: Any) -> dict[str, Any]:
    """The production layout: AWS names to the inbound endpoint under private-only, the
    rest to the corporate resolvers with no policy of their own."""
    return forwarder_config(
        {"r53": [r53.addr], "corp": [corp.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "r53", "policy": "private-only"},
               {"match": ".", "upstream": "corp"}],
        policies={"private-only": policy},
        cache={"enabled": False})


async def ask(srv: Any, transport: str, name: str, qtype: str = "A") -> dns.message.Message:
    return await query(srv, transport, name, qtype, use_edns=0)


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.code), o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.address for rrset in msg.answer for rd in rrset if hasattr(rd, "address"))


def verdicts(action: str, where: str, rule: str = ".", policy: str = "private-only") -> float:
    return metrics.REGISTRY.get_sample_value(
        "forwarder_policy_verdicts_total",
        {"policy": policy, "rule": rule, "action": action, "mode": "enforce",
         "where": where}) or 0.0


@pytest.fixture
async def corp(upstream: FakeUpstream) -> FakeUpstream:
    upstream.handler = answers(CORP)
    return upstream


@pytest.fixture
async def r53(upstream2: FakeUpstream) -> FakeUpstream:
    upstream2.handler = answers(R53)
    return upstream2


# --- a corporate CNAME into a protected name -------------------------------------------------


async def test_corporate_cname_into_s3_is_blocked_by_the_aws_rules_policy(
        corp: FakeUpstream, r53: FakeUpstream, transport: str, tmp_path: Path) -> None:
    """files.corp.example.com CNAME my-bucket.s3...amazonaws.com A 52.219.150.29 from the
    corporate resolvers: `.` has no policy, so the policy of the rule that routes the
    bucket name (amazonaws.com -> private-only) judges it: SERVFAIL with EDE 15, counted
    with where="chain", and the query log names the policy and the protected name."""
    log = tmp_path / "q.jsonl"
    cfg = operator(corp, r53)
    cfg["querylog"] = {"enabled": True, "path": str(log)}
    before = verdicts("servfail", "chain")
    async with running(cfg) as srv:
        r = await ask(srv, transport, FILES)
    assert r.rcode() == dns.rcode.SERVFAIL
    [(code, text)] = ede(r)
    assert code == 15
    assert text.startswith(f"public address 52.219.150.29 for {BUCKET} (CNAME target of "
                           f"{FILES}) from group corp violates policy private-only")
    assert verdicts("servfail", "chain") == before + 1
    [line] = logged_queries(log)
    assert (line["verdict"], line["action"], line["policy"], line["protected"]) == (
        "violation", "servfail", "private-only", BUCKET)


async def test_corporate_cname_into_s3_is_rewritten_to_the_endpoint(
        corp: FakeUpstream, r53: FakeUpstream, transport: str) -> None:
    """The same chain under a rewrite policy: the CNAME stays, the bucket name gets the
    Interface endpoint's private addresses (EDE 4)."""
    cfg = operator(corp, r53, on_violation="rewrite", rewrite={
        "*.s3.ap-northeast-1.amazonaws.com": {"A": ["10.0.1.15", "10.0.2.15"]}})
    async with running(cfg) as srv:
        r = await ask(srv, transport, FILES)
    assert r.rcode() == dns.rcode.NOERROR
    assert addresses(r) == ["10.0.1.15", "10.0.2.15"]
    assert r.answer[0].name.to_text() == f"{FILES}." and r.answer[0].rdtype == 5
    assert [code for code, _ in ede(r)] == [4]


async def test_corporate_answers_without_protected_names_are_not_judged(
        corp: FakeUpstream, r53: FakeUpstream, transport: str, tmp_path: Path) -> None:
    """An ordinary corporate answer passes as before: no verdict, no policy in the log."""
    log = tmp_path / "q.jsonl"
    cfg = operator(corp, r53)
    cfg["querylog"] = {"enabled": True, "path": str(log)}
    async with running(cfg) as srv:
        r = await ask(srv, transport, "www.example.org")
    assert addresses(r) == ["93.184.215.14"] and not ede(r)
    [line] = logged_queries(log)
    assert (line["verdict"], line["policy"], line["protected"]) == (None, None, None)


async def test_protection_policy_guards_names_no_rule_routes_with_a_policy(
        corp: FakeUpstream, r53: FakeUpstream, transport: str) -> None:
    """With only `.` to the corporate resolvers, `protection.policy` judges protected
    names: a direct S3 query answered publicly is blocked."""
    cfg = forwarder_config({"corp": [corp.addr]}, zones=[{"match": ".", "upstream": "corp"}],
                           policies={"p": {}}, protection={"policy": "p"},
                           cache={"enabled": False})
    async with running(cfg) as srv:
        blocked = await ask(srv, transport, BUCKET)
        fine = await ask(srv, transport, "www.example.org")
    assert blocked.rcode() == dns.rcode.SERVFAIL and ede(blocked)[0][0] == 15
    assert "violates policy p" in ede(blocked)[0][1]
    assert addresses(fine) == ["93.184.215.14"]


# --- service endpoints, not customer resources -------------------------------------------------


@pytest.mark.parametrize("name", [ALB, NLB, EC2_DNS, RDS, "app.corp.example.com"])
async def test_customer_resources_pass_with_protected_default(
        corp: FakeUpstream, r53: FakeUpstream, transport: str, name: str) -> None:
    """A public ALB, NLB, EC2 public DNS name or public RDS endpoint (directly, or behind a
    corporate CNAME) resolves to public addresses by design: it passes `protected: default`
    through `unprotected: default`."""
    async with running(operator(corp, r53)) as srv:
        r = await ask(srv, transport, name)
    assert r.rcode() == dns.rcode.NOERROR and addresses(r) and not ede(r)


@pytest.mark.parametrize("name", ["ec2.ap-northeast-1.amazonaws.com",
                                  "ssm.ap-northeast-1.amazonaws.com",
                                  "sts.ap-northeast-1.amazonaws.com"])
async def test_service_endpoints_stay_protected(corp: FakeUpstream, r53: FakeUpstream,
                                                transport: str, name: str) -> None:
    """The EC2 API, SSM and STS endpoints answered with public addresses are blocked."""
    async with running(operator(corp, r53)) as srv:
        r = await ask(srv, transport, name)
    assert r.rcode() == dns.rcode.SERVFAIL and ede(r)[0][0] == 15


async def test_unprotected_can_be_replaced_and_extended(corp: FakeUpstream, r53: FakeUpstream,
                                                        transport: str) -> None:
    """`unprotected: []` protects the ALB name again; `[default, pattern]` adds a name."""
    async with running(operator(corp, r53, unprotected=[])) as srv:
        alb = await ask(srv, transport, ALB)
    assert alb.rcode() == dns.rcode.SERVFAIL
    extra = ["default", "sts.ap-northeast-1.amazonaws.com"]
    async with running(operator(corp, r53, unprotected=extra)) as srv:
        alb = await ask(srv, transport, ALB)
        sts = await ask(srv, transport, "sts.ap-northeast-1.amazonaws.com")
        ssm = await ask(srv, transport, "ssm.ap-northeast-1.amazonaws.com")
    assert alb.rcode() == dns.rcode.NOERROR and sts.rcode() == dns.rcode.NOERROR
    assert ssm.rcode() == dns.rcode.SERVFAIL


# --- rules without a policy, and the opt-out -------------------------------------------------


async def test_a_clients_rule_without_policy_is_judged_by_the_zones_policy(
        corp: FakeUpstream, r53: FakeUpstream, transport: str) -> None:
    """A `clients:` rule for AWS names without a policy of its own: the answers it gets are
    judged by the policy of the rule that routes AWS names for everyone."""
    cfg = operator(corp, r53)
    cfg["zones"].insert(0, {"match": "amazonaws.com", "upstream": "corp",
                            "clients": ["127.0.0.0/8"]})
    async with running(cfg) as srv:
        r = await ask(srv, transport, BUCKET)
    assert len(corp.received) == 1 and not r53.received
    assert r.rcode() == dns.rcode.SERVFAIL and "group corp" in ede(r)[0][1]


async def test_policy_none_opts_a_rule_out(corp: FakeUpstream, r53: FakeUpstream,
                                           transport: str) -> None:
    """`policy: none` on `.`: the corporate CNAME into S3 passes unjudged; on a rule of its
    own under amazonaws.com, a direct query passes too."""
    cfg = operator(corp, r53)
    cfg["zones"][1]["policy"] = "none"
    cfg["zones"].insert(0, {"match": "sts.ap-northeast-1.amazonaws.com", "upstream": "r53",
                            "policy": "none"})
    async with running(cfg) as srv:
        files = await ask(srv, transport, FILES)
        sts = await ask(srv, transport, "sts.ap-northeast-1.amazonaws.com")
        ssm = await ask(srv, transport, "ssm.ap-northeast-1.amazonaws.com")
    assert addresses(files) == ["52.219.150.29"] and not ede(files)
    assert addresses(sts) == ["52.119.2.2"]
    assert ssm.rcode() == dns.rcode.SERVFAIL


# --- hooks ---------------------------------------------------------------------------------


HOOK = '''
from forwarder.hooks import Answer, Replace, Reroute

def on_query(ctx):
    if ctx.qname == "maint.s3.ap-northeast-1.amazonaws.com":
        return Answer([(ctx.qname, "A", 60, "52.219.9.9")])
    if ctx.qname == "trusted.s3.ap-northeast-1.amazonaws.com":
        return Answer([(ctx.qname, "A", 60, "52.219.9.9")], trusted=True)
    if ctx.qname == "private.s3.ap-northeast-1.amazonaws.com":
        return Answer([(ctx.qname, "A", 60, "10.0.9.9")])
    if ctx.qname == "other.example.net":
        return Reroute("corp")

def on_response(ctx, response):
    if ctx.qname == "www.example.org":
        return Replace([("www.example.org", "CNAME", 60, "%s" % BUCKET),
                        (BUCKET, "A", 60, "52.219.150.29")])
'''


async def test_hook_answers_are_judged_unless_trusted(corp: FakeUpstream, r53: FakeUpstream,
                                                      transport: str, tmp_path: Path) -> None:
    """A hook's Answer with a public address for a protected name is blocked; with
    trusted=True it passes and is counted; a private one passes. A Replace that points a
    corporate name at S3's public address is blocked too."""
    hook = tmp_path / "maint.py"
    hook.write_text(f"BUCKET = {BUCKET!r}\n" + HOOK)
    cfg = operator(corp, r53)
    cfg["hooks"] = [{"path": str(hook)}]
    trusted = metrics.REGISTRY.get_sample_value("forwarder_hook_trusted_answers_total",
                                                {"hook": "maint"}) or 0.0
    async with running(cfg) as srv:
        blocked = await ask(srv, transport, "maint.s3.ap-northeast-1.amazonaws.com")
        passed = await ask(srv, transport, "trusted.s3.ap-northeast-1.amazonaws.com")
        private = await ask(srv, transport, "private.s3.ap-northeast-1.amazonaws.com")
        replaced = await ask(srv, transport, "www.example.org")
    assert blocked.rcode() == dns.rcode.SERVFAIL
    assert ("public address 52.219.9.9 for maint.s3.ap-northeast-1.amazonaws.com from hook "
            "maint violates policy private-only") in ede(blocked)[0][1]
    assert addresses(passed) == ["52.219.9.9"]
    assert metrics.REGISTRY.get_sample_value("forwarder_hook_trusted_answers_total",
                                             {"hook": "maint"}) == trusted + 1
    assert addresses(private) == ["10.0.9.9"]
    assert replaced.rcode() == dns.rcode.SERVFAIL and ede(replaced)[0][0] == 15


async def test_a_reroute_off_every_rule_is_judged_by_the_guard(
        corp: FakeUpstream, r53: FakeUpstream, transport: str, tmp_path: Path) -> None:
    """No rule matches other.example.net; a hook reroutes it to the corporate resolvers,
    whose answer is a CNAME into S3 with a public address: the amazonaws.com rule's policy
    judges it."""
    hook = tmp_path / "steer.py"
    hook.write_text(f"BUCKET = {BUCKET!r}\n" + HOOK)
    cfg = operator(corp, r53)
    cfg["zones"] = [cfg["zones"][0]]  # no `.` rule
    cfg["hooks"] = [{"path": str(hook)}]
    async with running(cfg) as srv:
        r = await ask(srv, transport, "other.example.net")
    assert len(corp.received) == 1
    assert r.rcode() == dns.rcode.SERVFAIL and ede(r)[0][0] == 15


# --- local records -------------------------------------------------------------------------


def local_config(corp: FakeUpstream, value: str, **policy: Any) -> dict[str, Any]:
    return forwarder_config(
        {"corp": [corp.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "corp", "policy": "private-only"},
               {"match": "s3.ap-northeast-1.amazonaws.com", "records": [
                   {"name": "s3.ap-northeast-1.amazonaws.com", "type": "A", "value": value}]},
               {"match": "files.corp.example.com", "records": [
                   {"name": "files.corp.example.com", "type": "CNAME",
                    "value": "s3.ap-northeast-1.amazonaws.com"}]},
               {"match": ".", "upstream": "corp"}],
        policies={"private-only": policy})


async def test_local_records_for_protected_names_are_judged_when_built(
        corp: FakeUpstream, transport: str) -> None:
    """A local A record with a private address for a protected name is served; the same
    record with a public address is a configuration error naming the rule; under a
    monitoring policy it loads (the policy only counts it)."""
    async with running(local_config(corp, "10.0.1.15")) as srv:
        r = await ask(srv, transport, "s3.ap-northeast-1.amazonaws.com")
    assert addresses(r) == ["10.0.1.15"]
    with pytest.raises(ConfigError) as error:
        runtime.build(config_mod.from_data(local_config(corp, "52.219.1.1"), "<test>"))
    [problem] = error.value.problems
    assert problem.path == "zones[1].records"
    assert "gives protected name s3.ap-northeast-1.amazonaws.com public address 52.219.1.1" \
        in problem.reason and "policy private-only" in problem.reason
    async with running(local_config(corp, "52.219.1.1", mode="monitor")) as srv:
        r = await ask(srv, transport, "s3.ap-northeast-1.amazonaws.com")
    assert addresses(r) == ["52.219.1.1"]


async def test_check_config_reports_local_answers_and_the_opt_out(
        corp: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config: a local record that breaks the policy is an error (exit 2) naming the
    file, line and rule; `policy: none` is a warning (exit 0)."""
    from forwarder import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps(local_config(corp, "52.219.1.1")))
    assert cli.main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "zones[1].records" in err and "public address 52.219.1.1" in err
    cfg = local_config(corp, "10.0.1.15")
    cfg["zones"][3]["policy"] = "none"
    opted = tmp_path / "opted.yaml"
    opted.write_text(json.dumps(cfg))
    assert cli.main(["check-config", str(opted)]) == 0
    err = capsys.readouterr().err
    assert "zones[3].policy: warning: policy: none" in err
