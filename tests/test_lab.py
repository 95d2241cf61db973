"""`forwarder lab` as a newcomer runs it: simulated resolvers, the forwarder with
config/lab.yaml, the scripted queries and their table; `--serve` answers dig until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import signal
import socket
import sys
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import pytest

from forwarder import cli, lab
from forwarder.process import exits

FORWARDER = [sys.executable, "-m", "forwarder"]
README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def row(out: str, name: str, section: str = "") -> str:
    """The table line of *name* (its first column), in the first section whose title
    starts with *section*."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"-- {section}"))
    return next(line for line in lines[start:] if line.split(" ", 1)[0] == name)


def test_the_lab_is_not_on_the_mdns_port() -> None:
    """5353 is mDNS, held by Avahi on most desktops: the lab's forwarder listens on 15400,
    from lab.yaml, unless --port says otherwise; the README tells which."""
    assert cli.build_parser().parse_args(["lab", "--serve"]).port is None
    _, data = lab.load_lab_config()
    assert lab.default_port(data) == 15400
    assert "dig @127.0.0.1 -p 15400 s3.ap-northeast-3.amazonaws.com" in README
    assert "5353" not in README.split("## How a query is handled")[0].replace(
        "not 5353", "")


async def test_lab_runs_every_scenario_and_exits_0() -> None:
    proc = await asyncio.create_subprocess_exec(
        *FORWARDER, "lab", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, out + err
    n = len(lab.SCENARIOS)
    assert f"{n} of {n} scenarios as expected" in out
    for scenario in lab.SCENARIOS:
        assert row(out, scenario.name).endswith("ok"), row(out, scenario.name)
    # the rows a newcomer reads, column by column
    rewrite = row(out, "s3.ap-northeast-3.amazonaws.com").split()
    assert rewrite[1:5] == ["A", "vpc-gateway", "NOERROR", "52.219.4.18"]
    assert "violation -> rewrite" in row(out, "s3.ap-northeast-3.amazonaws.com")
    assert "NOERROR 10.3.1.15 10.3.2.15 EDE 4" in row(out, "s3.ap-northeast-3.amazonaws.com")
    assert "SERVFAIL EDE 15" in row(out, "s3.us-east-1.amazonaws.com")
    assert "pass" in row(out, "my-bucket.s3.ap-northeast-1.amazonaws.com").split()
    monitor = row(out, "ec2.ap-northeast-3.amazonaws.com")
    assert "violation, monitor: would servfail" in monitor
    assert "NOERROR 15.152.5.10" in monitor and "EDE" not in monitor
    assert "local records" in row(out, "internal.example.com")
    assert "NOERROR 10.0.100.21" in row(out, "internal.example.com")
    assert "not judged" in row(out, "www.example.org")
    assert "corp-downloads.s3.us-east-1.amazonaws.com (CNAME target of " \
           "downloads.corp.example.com)" in out
    assert 'mode="monitor",policy="osaka-monitor"' in out  # the leak was counted


async def test_every_field_report_situation_has_its_row_and_signal() -> None:
    """The situations of the field reports, each with the client's answer and what the
    operator sees, checked (not only printed): a failing signal is a MISMATCH."""
    out = io.StringIO()
    assert await lab.run(port=0, out=out) == exits.EXIT_OK, out.getvalue()
    text = out.getvalue()
    # two accounts: S3 to the file-sharing account, the SSM agent's bucket included
    bucket = row(text, "amazon-ssm-ap-northeast-1.s3.ap-northeast-1.amazonaws.com", "127.0.0.1")
    assert bucket.split()[1:3] == ["A", "files-inbound"] and "pass" in bucket
    # inside the VPC: S3 as AWS answers it (a CNAME to s3-r-w), Gateway-routed: passes
    inside = row(text, "s3.ap-northeast-1.amazonaws.com", "127.0.0.2")
    assert "NOERROR CNAME -> 52.219.150.28" in inside and " pass " in inside
    # on premises through that VPC: blocked, canary failing, /readyz 503
    site = row(text, "s3.ap-northeast-1.amazonaws.com", "127.0.0.3")
    assert "violation -> servfail" in site and "SERVFAIL EDE 15" in site
    assert ("s3.ap-northeast-1.amazonaws.com (from 127.0.0.3): /readyz 503: group "
            "tokyo-inbound: canary failing: ") in text
    assert 'forwarder_upstream_canary_ok{group="tokyo-inbound"} 0  ok' in text
    # EC2 and CloudWatch, inside the VPC and outside it
    assert "NOERROR 172.16.2.49" in row(text, "monitoring.ap-northeast-1.amazonaws.com",
                                        "127.0.0.2")
    assert "SERVFAIL EDE 15" in row(text, "monitoring.ap-northeast-1.amazonaws.com",
                                    "127.0.0.4")
    # AZ-specific endpoint names, S3's global name, a CNAME to an endpoint's own name and
    # a public ALB behind a corporate CNAME
    assert "NOERROR 10.0.2.15" in row(
        text, "bucket.vpce-0abc123-xyz-ap-northeast-1c.s3.ap-northeast-1.vpce.amazonaws.com")
    assert "use the regional name presigned-bucket.s3.REGION.amazonaws.com" in text
    assert "local CNAME, pass" in row(text, "api.internal.example.com")
    assert "not judged" in row(text, "webapp.example.com")
    signals = text.split("What the operator sees (each expected signal):")[1]
    assert "MISMATCH" not in signals
    assert sum(line.endswith("  ok") for line in signals.splitlines()) == sum(
        len(s.signals) for s in lab.SCENARIOS)


async def test_a_signal_that_does_not_hold_is_a_mismatch() -> None:
    from forwarder.lab import scenarios

    wrong = dataclasses.replace(lab.SCENARIOS[0], signals=(
        scenarios.Ready("files-inbound", False, "canary failing"),
        scenarios.verdicts("private-only", "s3-file-sharing", "servfail"),
        scenarios.EdeText("no such words")))
    out = io.StringIO()
    assert await lab.run(port=0, scenarios=[wrong], out=out) == exits.EXIT_MISMATCH
    text = out.getvalue()
    assert "0 of 1 scenarios as expected" in text
    assert "/readyz 503: group files-inbound: canary failing...  MISMATCH (seen: /readyz " in text
    assert 'rule="s3-file-sharing",where="qname"} +1  MISMATCH (seen: +0)' in text
    assert 'EDE text: "...no such words..."  MISMATCH (seen: )' in text


async def test_a_client_address_this_machine_lacks_is_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where only 127.0.0.1 exists (macOS by default), the scenarios of the other client
    addresses are shown as skipped, and the lab still exits 0."""
    from forwarder.lab import report

    real = report.missing_address
    monkeypatch.setattr(lab, "missing_address",
                        lambda a: "not here" if a == "127.0.0.2" else real(a))
    inside = [s for s in lab.SCENARIOS if s.client == "127.0.0.2"]
    out = io.StringIO()
    assert await lab.run(port=0, scenarios=[lab.SCENARIOS[0], *inside], out=out) == 0
    text = out.getvalue()
    assert f"1 of 1 scenarios as expected ({len(inside)} skipped: their client address is " \
           "missing here)" in text
    assert "   skipped: not here" in text


async def test_broken_expectation_exits_3() -> None:
    """A scenario whose expectation cannot match: the row says MISMATCH and what was
    expected, and the exit code is 3."""
    impossible = lab.Scenario("test", "s3.ap-northeast-1.amazonaws.com", "A", "r53-inbound",
                              "pass", "NOERROR", ("10.9.9.9",))
    good = lab.SCENARIOS[0]
    out = io.StringIO()
    # port 0: the forwarder binds a port free for UDP and TCP itself. A port picked here
    # and released could be taken (by a TCP socket, or another test run) before it binds.
    code = await lab.run(port=0, scenarios=[good, impossible], out=out)
    text = out.getvalue()
    assert code == exits.EXIT_MISMATCH == 3
    assert "1 of 2 scenarios as expected" in text
    assert "MISMATCH" in text
    assert "expected: asked r53-inbound, verdict 'pass', client got NOERROR 10.9.9.9" in text


async def test_taken_resolver_port_moves_to_a_free_one() -> None:
    """Both groups on the moved resolver's port follow it (vpc-tokyo and tokyo-inbound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        with contextlib.suppress(OSError):  # already taken by someone else: just as good
            blocker.bind(("127.0.0.1", 15405))
        out = io.StringIO()
        chosen = [s for s in lab.SCENARIOS if s.asked in ("vpc-tokyo", "tokyo-inbound")]
        code = await lab.run(port=0, scenarios=chosen, out=out)
    assert code == 0, out.getvalue()
    assert "note: 127.0.0.1:15405 is taken; the simulated vpc-tokyo resolver listens on" \
        in out.getvalue()


async def test_forwarder_port_in_use_exits_1() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        code = await lab.run(port=port, scenarios=lab.SCENARIOS[:1], out=io.StringIO())
    assert code == exits.EXIT_FAILURE


async def test_serve_answers_dig_until_sigterm() -> None:
    """--serve: after the table it prints dig commands and keeps answering, both the
    forwarder (rewritten, EDE 4) and the simulated resolver (raw public answer); SIGTERM
    stops it with the table's exit code."""
    proc = await asyncio.create_subprocess_exec(
        *FORWARDER, "lab", "--serve", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        lines = []
        while not lines or not lines[-1].startswith("Serving until Ctrl-C"):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "lab exited before serving: " + "".join(lines)
            lines.append(line.decode())
        # "forwarder lab: the forwarder on 127.0.0.1:PORT in front of ...": the port it bound
        header = next(line for line in lines if line.startswith("forwarder lab: the forwarder"))
        port = int(header.split("127.0.0.1:")[1].split()[0])
        commands = [(await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
                    for _ in range(3)]
        resolver_port = int(commands[0].split("-p ")[1].split()[0])
        assert f"dig @127.0.0.1 -p {port} s3.ap-northeast-3.amazonaws.com" in commands[1]

        q = dns.message.make_query("s3.ap-northeast-3.amazonaws.com", "A", use_edns=0)
        client = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
        raw = await dns.asyncquery.tcp(q, "127.0.0.1", port=resolver_port, timeout=3)
        assert client.rcode() == dns.rcode.NOERROR
        assert sorted(rr.address for rr in client.answer[0]) == ["10.3.1.15", "10.3.2.15"]
        assert [o.code for o in client.options if o.otype == dns.edns.EDE] == [4]
        assert sorted(rr.address for rr in raw.answer[0]) == ["52.219.4.18", "52.219.8.20"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
