"""`forwarder explain NAME [TYPE]`: the rule, the group and server asked, the raw answer, the
policy verdict with reasons and the final answer, for one name, against fake upstreams."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path
from typing import Any

import yaml

from forwarder import config as config_mod
from forwarder import explain
from tests.conftest import forwarder_config
from tests.fakes import FakeUpstream, answers

POLICIES = {"private-only": {"on_violation": "servfail"},
            "s3-rewrite": {"on_violation": "rewrite",
                           "rewrite": {"s3.ap-northeast-1.amazonaws.com": {
                               "A": ["10.0.1.15", "10.0.2.15"]}}}}


def aws_config(upstream: FakeUpstream, policy: str = "s3-rewrite", **extra: Any) -> Any:
    data = forwarder_config(
        {"r53-inbound": [upstream.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "r53-inbound", "policy": policy},
               {"match": "internal.example.com", "records": [
                   {"name": "internal.example.com", "type": "A", "value": "10.0.100.21"}]}],
        policies=POLICIES, **extra)
    return config_mod.from_data(data, "explain.yaml")


async def run(cfg: Any, name: str, qtype: str = "A") -> tuple[int, list[str]]:
    out = io.StringIO()
    code = await explain.explain(cfg, name, qtype, out)
    return code, out.getvalue().splitlines()


def section(lines: list[str], label: str) -> list[str]:
    """The line starting with *label* and the indented lines under it."""
    start = next(i for i, line in enumerate(lines) if line.startswith(label))
    out = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        out.append(line.strip())
    return out


async def test_rewrite_shows_every_step(upstream: FakeUpstream) -> None:
    """Explain: S3 answered public by the VPC resolver, rewritten by the policy.

    Ask A s3.ap-northeast-1.amazonaws.com; upstream answers 52.219.150.28; expect the rule,
    the server asked, the raw public answer, the violation with its reason, and the
    rewritten answer with EDE 4."""
    upstream.handler = answers({("s3.ap-northeast-1.amazonaws.com", "A"): ["A 52.219.150.28"]})
    code, lines = await run(aws_config(upstream), "s3.ap-northeast-1.amazonaws.com")
    assert code == 0
    assert lines[0] == "query:        s3.ap-northeast-1.amazonaws.com A (client 127.0.0.1, udp)"
    assert section(lines, "rule:") == [
        "rule:         zones[0] match 'amazonaws.com': forward to group r53-inbound, "
        "policy s3-rewrite"]
    assert section(lines, "upstream:") == [
        f"upstream:     group r53-inbound: asked {upstream.addr} (try 1)"]
    assert section(lines, "raw answer:") == [
        f"raw answer:   NOERROR from {upstream.addr}",
        "s3.ap-northeast-1.amazonaws.com. 300 IN A 52.219.150.28"]
    verdict = section(lines, "verdict:")
    assert verdict[0] == "verdict:      violation (policy s3-rewrite, mode enforce): rewrite"
    assert "public address 52.219.150.28 for s3.ap-northeast-1.amazonaws.com" in verdict[1]
    final = section(lines, "final answer:")
    assert final[0] == "final answer: NOERROR, answered by policy"
    assert [line.split()[-1] for line in final[1:3]] == ["10.0.1.15", "10.0.2.15"]
    assert final[3].startswith("EDE 4 (Forged Answer): public address 52.219.150.28")
    steps = section(lines, "steps:")
    assert steps[1] == "1. rule zones[0] match 'amazonaws.com' -> forward"
    assert steps[2].startswith(f"2. ask {upstream.addr}")


async def test_private_answer_passes(upstream: FakeUpstream) -> None:
    upstream.handler = answers({("ssm.ap-northeast-1.amazonaws.com", "A"): ["A 10.0.1.21"]})
    code, lines = await run(aws_config(upstream, "private-only"),
                            "ssm.ap-northeast-1.amazonaws.com")
    assert code == 0
    assert section(lines, "verdict:")[0] == \
        "verdict:      pass (policy private-only, mode enforce)"
    final = section(lines, "final answer:")
    assert final == ["final answer: NOERROR, answered by upstream",
                     "ssm.ap-northeast-1.amazonaws.com. 300 IN A 10.0.1.21"]


async def test_blocked_answer_servfail_with_ede_15(upstream: FakeUpstream) -> None:
    upstream.handler = answers({("sts.ap-northeast-1.amazonaws.com", "A"): ["A 52.119.221.10"]})
    code, lines = await run(aws_config(upstream, "private-only"),
                            "sts.ap-northeast-1.amazonaws.com")
    assert code == 0  # the policy's SERVFAIL is an answer
    assert section(lines, "verdict:")[0] == \
        "verdict:      violation (policy private-only, mode enforce): servfail"
    final = section(lines, "final answer:")
    assert final[0] == "final answer: SERVFAIL, answered by policy"
    assert final[2].startswith("EDE 15 (Blocked): public address 52.119.221.10")


async def test_local_records_need_no_upstream(upstream: FakeUpstream) -> None:
    code, lines = await run(aws_config(upstream), "internal.example.com", "AAAA")
    assert code == 0
    assert section(lines, "rule:")[0].endswith(
        "match 'internal.example.com': answer from local records")
    assert section(lines, "upstream:") == ["upstream:     none: local records"]
    assert not any(line.startswith("raw answer:") for line in lines)
    assert section(lines, "verdict:") == [
        "verdict:      none: local records are judged when the configuration loads"]
    final = section(lines, "final answer:")
    assert final[0] == "final answer: NOERROR (authoritative), answered by local"
    assert final[1].startswith("authority: internal.example.com. 300 IN SOA")
    assert upstream.received == []


async def test_upstream_failure_exits_1(upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: None
    code, lines = await run(aws_config(upstream), "s3.ap-northeast-1.amazonaws.com")
    assert code == 1
    assert section(lines, "upstream:")[0] == (
        f"upstream:     group r53-inbound: asked {upstream.addr} (try 1); "
        f"{upstream.addr} (try 2)")
    assert section(lines, "raw answer:") == ["raw answer:   none: no server answered"]
    assert section(lines, "final answer:")[0] == "final answer: SERVFAIL, answered by error"


async def test_bad_type_is_a_usage_error(upstream: FakeUpstream) -> None:
    code, lines = await run(aws_config(upstream), "example.com", "NOPE")
    assert code == 2 and lines == []


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("zones: [{match: ., upstream: nowhere}]\n")
    assert explain.main("example.com", "A", str(bad)) == 2


async def test_cli_explain_local_name(tmp_path: Path) -> None:
    """`forwarder explain NAME TYPE -c FILE` as a user runs it (local records: no upstream)."""
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump({
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"corp": {"servers": ["127.0.0.1:9"]}},
        "zones": [{"match": ".", "upstream": "corp"},
                  {"match": "internal.example.com", "records": [
                      {"name": "internal.example.com", "type": "A", "value": "10.0.100.21"}]}],
    }))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "forwarder", "explain", "internal.example.com", "A", "-c",
        str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "internal.example.com. 300 IN A 10.0.100.21" in out.decode()


async def test_a_local_cname_out_of_the_zone_shows_the_target_judged(
        upstream: FakeUpstream) -> None:
    """Explain a PrivateLink alias: the local CNAME, the target's rule and server, the
    target's policy verdict and the whole answer."""
    vpce = "vpce-0def-abc.vpce-svc-0123.ap-northeast-1.vpce.amazonaws.com"
    upstream.handler = answers({(vpce, "A"): ["A 10.0.5.10"]})
    cfg = config_mod.from_data(forwarder_config(
        {"r53-inbound": [upstream.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "r53-inbound", "policy": "private-only"},
               {"match": "internal.example.com", "records": [
                   {"name": "portal.internal.example.com", "type": "CNAME", "value": vpce}]}],
        policies=POLICIES), "explain.yaml")
    code, lines = await run(cfg, "portal.internal.example.com")
    assert code == 0
    assert "verdict:      pass, by the policy of the rule that routes the CNAME target (see " \
           "the steps)" in lines
    assert section(lines, "final answer:") == [
        "final answer: NOERROR, answered by local",
        f"portal.internal.example.com. 300 IN CNAME {vpce}.", f"{vpce}. 300 IN A 10.0.5.10"]
    steps = section(lines, "steps:")
    assert f"3. CNAME target {vpce} leaves the local zone: rule zones[0] match " \
           "'amazonaws.com'" in steps
    assert any(step.startswith(f"5. policy private-only: {vpce} is protected") or
               step.startswith(f"6. policy private-only: {vpce} is protected") for step in steps)


async def test_explain_as_a_client_shows_what_protects_each_name(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    """`--client`: the client's `clients:` rule answers (a rule without a policy, whose
    corporate answer is a CNAME into S3), and each name of the answer is shown with what
    protects it and which policy judged it; another client takes the AWS rule."""
    bucket = "my-bucket.s3.ap-northeast-1.amazonaws.com"
    upstream.handler = answers({(bucket, "A"): ["A 10.0.1.15"]})
    upstream2.handler = answers({("files.corp.example.com", "A"): [
        f"files.corp.example.com. CNAME {bucket}.", f"{bucket}. A 52.219.150.29"],
        (bucket, "A"): ["A 52.219.150.29"]})
    data = forwarder_config(
        {"r53-inbound": [upstream.addr], "corp": [upstream2.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "corp", "clients": ["10.1.0.0/16"]},
               {"match": "amazonaws.com", "upstream": "r53-inbound", "policy": "private-only"},
               {"match": ".", "upstream": "corp"}],
        policies=POLICIES)
    cfg = config_mod.from_data(data, "explain.yaml")
    out = io.StringIO()
    assert await explain.explain(cfg, "files.corp.example.com", "A", out,
                                 client="10.1.2.3") == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "query:        files.corp.example.com A (client 10.1.2.3, udp)"
    assert section(lines, "verdict:")[0] == (
        "verdict:      violation (policy private-only, mode enforce): servfail; it guards "
        f"{bucket}, found in the answer")
    names = section(lines, "names:")
    assert names[0] == "names:        as client 10.1.2.3 sees them (for A)"
    assert names[1].split() == ["files.corp.example.com", "not", "protected:", "no", "policy",
                                "guards", "it:", "no", "rule", "that", "routes", "it",
                                "states", "one,", "and", "protection.policy", "is", "unset"]
    assert names[2] == (f"{bucket}  protected: under amazonaws.com (policy private-only, the "
                        "policy of rule zones[1] 'amazonaws.com', which routes it)")
    out = io.StringIO()
    assert await explain.explain(cfg, bucket, "A", out, client="10.1.2.3") == 0
    assert "rule:         zones[0] match 'amazonaws.com': forward to group corp" in \
        out.getvalue()
    assert "final answer: SERVFAIL, answered by policy" in out.getvalue()
    out = io.StringIO()
    assert await explain.explain(cfg, bucket, "A", out) == 0  # 127.0.0.1: the AWS rule
    assert "final answer: NOERROR, answered by upstream" in out.getvalue()


async def test_explain_rejects_a_client_that_is_no_address(upstream: FakeUpstream) -> None:
    out = io.StringIO()
    assert await explain.explain(aws_config(upstream), "x.example", "A", out,
                                 client="not-an-ip") == 2
