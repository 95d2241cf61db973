"""The lab's scripted queries: one per situation of the field reports, each with the answer
its client must get and what the operator must see (a metric, /readyz, the EDE's words).

The client address says where the query comes from (config/lab.yaml's `clients:` rules):
127.0.0.1 on premises after the fix, 127.0.0.2 inside the Tokyo VPC, 127.0.0.3 a site
still going through the Tokyo VPC's inbound endpoint, 127.0.0.4 outside any VPC.
"""

from __future__ import annotations

from dataclasses import dataclass

from forwarder.dns import wire
from forwarder.lab.resolvers import (
    ALB,
    TOKYO_VPCE,
    TOKYO_VPCE_1A,
    TOKYO_VPCE_1C,
)

ONPREM, INSIDE, SITE_B, OUTSIDE = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"


@dataclass(frozen=True)
class Metric:
    """A Prometheus sample: grown by `value` during the query (`delta`), or at `value`
    after it."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    delta: bool = True

    def __str__(self) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.name}{{{labels}}} {'+' if self.delta else ''}{self.value:g}"


@dataclass(frozen=True)
class Ready:
    """One group's part of /readyz after the query: ready, or not with a reason that
    starts with `reason`."""

    group: str
    ready: bool
    reason: str = ""

    def __str__(self) -> str:
        if self.ready:
            return f"/readyz: group {self.group} ok"
        return f"/readyz 503: group {self.group}: {self.reason}..."


@dataclass(frozen=True)
class EdeText:
    """Words the client's EDE text must hold (and the policy's log line: the same words)."""

    text: str

    def __str__(self) -> str:
        return f'EDE text: "...{self.text}..."'


Signal = Metric | Ready | EdeText


@dataclass(frozen=True)
class Scenario:
    """One scripted query and the outcome it must have."""

    section: str
    name: str
    qtype: str
    asked: str  # the upstream group the forwarder must ask, "local", or "-"
    verdict: str  # as the VERDICT column shows it
    rcode: str
    addresses: tuple[str, ...] = ()
    ede: int | None = None
    client: str = ONPREM
    signals: tuple[Signal, ...] = ()


def verdicts(policy: str, rule: str, action: str, mode: str = "enforce",
             where: str = "qname") -> Metric:
    """forwarder_policy_verdicts_total grown by one."""
    return Metric("forwarder_policy_verdicts_total", (
        ("action", action), ("mode", mode), ("policy", policy), ("rule", rule),
        ("where", where)), 1)


def answered(rule: str, rcode: str) -> Metric:
    """forwarder_responses_total (UDP) grown by one."""
    return Metric("forwarder_responses_total", (("protocol", "udp"), ("rcode", rcode),
                                                ("rule", rule)), 1)


def canary_ok(group: str, ok: bool) -> Metric:
    return Metric("forwarder_upstream_canary_ok", (("group", group),), 1 if ok else 0, False)


TWO_ACCOUNTS = ("127.0.0.1 on premises, one inbound endpoint per account (the SSM Hybrid "
                "Activation report, fixed): S3 via file sharing, the rest via shared services")
VPCE = ("127.0.0.1: endpoint-specific names, AZ-specific ones too (the presigned-URL report): "
        "public zone, private addresses, no inbound endpoint needed")
PRESIGNED = "127.0.0.1: a presigned URL with S3's global name (the presigned-URL report)"
GATEWAY = ("127.0.0.1: S3 in Osaka through a Gateway endpoint: rewritten until private DNS "
           "is on; the rest of Osaka in monitor mode")
INSIDE_VPC = ("127.0.0.2 inside the Tokyo VPC (the endpoint-path and VPC-endpoint reports): "
              "S3 via a Gateway endpoint, EC2 and CloudWatch via Interface endpoints")
SITE = ("127.0.0.3 on premises through the Tokyo VPC's inbound endpoint (the SSM Hybrid "
        "Activation report, before the fix): S3 has only a Gateway endpoint there")
OUTSIDE_VPC = ("127.0.0.4 outside any VPC (the endpoint-path and VPC-endpoint reports): "
               "the internet's DNS answers publicly")
LOCAL = ("127.0.0.1: a PrivateLink service under a private name (the SaaS report): local "
         "records, and a CNAME to the endpoint's own name")
CORP = "127.0.0.1: corporate names"
EVERY_PATH = ("127.0.0.1: protection on every path: corporate CNAMEs, customer resources, "
              "hook answers (`.` has no policy of its own)")

TOKYO_S3_IPS = ("10.0.1.15", "10.0.2.15")
OSAKA_REWRITE = ("10.3.1.15", "10.3.2.15")
SSM_BUCKET = "amazon-ssm-ap-northeast-1.s3.ap-northeast-1.amazonaws.com"
GATEWAY_QUESTION = "is this VPC's S3 endpoint a Gateway endpoint? On-premises clients need"
BLOCKED, FORGED = wire.Ede.BLOCKED, wire.Ede.FORGED_ANSWER
S3_FILES = "s3-file-sharing"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(TWO_ACCOUNTS, "s3.ap-northeast-1.amazonaws.com", "A", "files-inbound", "pass",
             "NOERROR", TOKYO_S3_IPS, signals=(Ready("files-inbound", True),)),
    Scenario(TWO_ACCOUNTS, "my-bucket.s3.ap-northeast-1.amazonaws.com", "A", "files-inbound",
             "pass", "NOERROR", TOKYO_S3_IPS,
             signals=(verdicts("private-only", S3_FILES, "pass"),)),
    # the bucket the SSM agent downloads from during Hybrid Activation
    Scenario(TWO_ACCOUNTS, SSM_BUCKET, "A", "files-inbound", "pass", "NOERROR", TOKYO_S3_IPS,
             signals=(verdicts("private-only", S3_FILES, "pass"),)),
    Scenario(TWO_ACCOUNTS, "ssm.ap-northeast-1.amazonaws.com", "A", "r53-inbound", "pass",
             "NOERROR", ("10.0.1.21", "10.0.2.21"), signals=(Ready("r53-inbound", True),)),
    Scenario(TWO_ACCOUNTS, "ec2messages.ap-northeast-1.amazonaws.com", "A", "r53-inbound",
             "pass", "NOERROR", ("10.0.1.22", "10.0.2.22"),
             signals=(verdicts("private-only", "tokyo-shared", "pass"),)),
    Scenario(TWO_ACCOUNTS, "ssmmessages.ap-northeast-1.amazonaws.com", "A", "r53-inbound",
             "pass", "NOERROR", ("10.0.1.23", "10.0.2.23"),
             signals=(verdicts("private-only", "tokyo-shared", "pass"),)),
    Scenario(TWO_ACCOUNTS, "sts.ap-northeast-1.amazonaws.com", "A", "r53-inbound",
             "violation -> servfail", "SERVFAIL", (), BLOCKED, signals=(
                 verdicts("private-only", "tokyo-shared", "servfail"),
                 EdeText("sts.ap-northeast-1.amazonaws.com from group r53-inbound violates "
                         "policy private-only"))),
    Scenario(VPCE, TOKYO_VPCE, "A", "corp", "pass", "NOERROR", TOKYO_S3_IPS,
             signals=(verdicts("private-only", "vpce.amazonaws.com", "pass"),)),
    Scenario(VPCE, f"bucket.{TOKYO_VPCE}", "A", "corp", "pass", "NOERROR", TOKYO_S3_IPS,
             signals=(verdicts("private-only", "vpce.amazonaws.com", "pass"),)),
    Scenario(VPCE, TOKYO_VPCE_1A, "A", "corp", "pass", "NOERROR", TOKYO_S3_IPS[:1],
             signals=(verdicts("private-only", "vpce.amazonaws.com", "pass"),)),
    Scenario(VPCE, f"bucket.{TOKYO_VPCE_1C}", "A", "corp", "pass", "NOERROR",
             TOKYO_S3_IPS[1:], signals=(verdicts("private-only", "vpce.amazonaws.com", "pass"),)),
    Scenario(PRESIGNED, "presigned-bucket.s3.amazonaws.com", "A", "vpc-gateway",
             "violation -> servfail", "SERVFAIL", (), BLOCKED, signals=(
                 verdicts("private-only", "amazonaws.com", "servfail"),
                 EdeText("use the regional name presigned-bucket.s3.REGION.amazonaws.com "
                         "with the bucket's region"))),
    Scenario(GATEWAY, "s3.ap-northeast-3.amazonaws.com", "A", "vpc-gateway",
             "violation -> rewrite", "NOERROR", OSAKA_REWRITE, FORGED,
             signals=(verdicts("s3-osaka-rewrite", "s3.ap-northeast-3.amazonaws.com",
                               "rewrite"),)),
    Scenario(GATEWAY, "my-bucket.s3.ap-northeast-3.amazonaws.com", "A", "vpc-gateway",
             "violation -> rewrite", "NOERROR", OSAKA_REWRITE, FORGED,
             signals=(EdeText("rewritten to 10.3.1.15, 10.3.2.15 (rewrite key "
                              "*.s3.ap-northeast-3.amazonaws.com)"),)),
    Scenario(GATEWAY, "s3.us-east-1.amazonaws.com", "A", "vpc-gateway",
             "violation -> servfail", "SERVFAIL", (), BLOCKED,
             signals=(EdeText("52.216.8.21 and 52.216.40.5 are in AWS's published S3 range "
                              "for us-east-1"),)),
    Scenario(GATEWAY, "ec2.ap-northeast-3.amazonaws.com", "A", "vpc-gateway",
             "violation, monitor: would servfail", "NOERROR", ("15.152.5.10",),
             signals=(verdicts("osaka-monitor", "ap-northeast-3.amazonaws.com", "servfail",
                               "monitor"),)),
    # S3 as AWS answers it, public, but routed privately by this VPC's Gateway endpoint
    Scenario(INSIDE_VPC, "s3.ap-northeast-1.amazonaws.com", "A", "vpc-tokyo", "pass",
             "NOERROR", ("52.219.150.28", "52.219.152.4"), client=INSIDE,
             signals=(verdicts("in-vpc", "in-vpc", "pass"), Ready("vpc-tokyo", True))),
    Scenario(INSIDE_VPC, "ec2.ap-northeast-1.amazonaws.com", "A", "vpc-tokyo", "pass",
             "NOERROR", ("10.0.100.10", "10.0.200.10"), client=INSIDE,
             signals=(verdicts("in-vpc", "in-vpc", "pass"),)),
    Scenario(INSIDE_VPC, "monitoring.ap-northeast-1.amazonaws.com", "A", "vpc-tokyo", "pass",
             "NOERROR", ("172.16.2.49",), client=INSIDE,
             signals=(verdicts("in-vpc", "in-vpc", "pass"),)),
    Scenario(SITE, "s3.ap-northeast-1.amazonaws.com", "A", "tokyo-inbound",
             "violation -> servfail", "SERVFAIL", (), BLOCKED, client=SITE_B, signals=(
                 Ready("tokyo-inbound", False, "canary failing: s3.ap-northeast-1.amazonaws.com"
                                               " A resolved to 52.219."),
                 canary_ok("tokyo-inbound", False), EdeText(GATEWAY_QUESTION))),
    Scenario(SITE, SSM_BUCKET, "A", "tokyo-inbound", "violation -> servfail", "SERVFAIL", (),
             BLOCKED, client=SITE_B, signals=(verdicts("private-only", "site-b", "servfail"),
                                              EdeText(GATEWAY_QUESTION))),
    Scenario(SITE, "ssm.ap-northeast-1.amazonaws.com", "A", "tokyo-inbound", "pass",
             "NOERROR", ("10.0.3.21", "10.0.4.21"), client=SITE_B,
             signals=(verdicts("private-only", "site-b", "pass"),)),
    Scenario(OUTSIDE_VPC, "ec2.ap-northeast-1.amazonaws.com", "A", "corp",
             "violation -> servfail", "SERVFAIL", (), BLOCKED, client=OUTSIDE,
             signals=(EdeText("54.248.220.10 is in AWS's published EC2 range for "
                              "ap-northeast-1"),)),
    Scenario(OUTSIDE_VPC, "monitoring.ap-northeast-1.amazonaws.com", "A", "corp",
             "violation -> servfail", "SERVFAIL", (), BLOCKED, client=OUTSIDE,
             signals=(verdicts("private-only", "outside", "servfail"),)),
    Scenario(LOCAL, "internal.example.com", "A", "local", "local records", "NOERROR",
             ("10.0.100.21",), signals=(answered("internal.example.com", "NOERROR"),)),
    Scenario(LOCAL, "portal.internal.example.com", "A", "local", "local records", "NOERROR",
             ("10.0.100.21",), signals=(answered("internal.example.com", "NOERROR"),)),
    Scenario(LOCAL, "www.internal.example.com", "A", "local", "local records", "NXDOMAIN",
             signals=(answered("internal.example.com", "NXDOMAIN"),)),
    Scenario(LOCAL, "api.internal.example.com", "A", "corp", "local CNAME, pass", "NOERROR",
             ("10.0.5.10", "10.0.6.10"),
             signals=(verdicts("private-only", "vpce.amazonaws.com", "pass"),)),
    Scenario(CORP, "downloads.corp.example.com", "A", "corp", "violation -> servfail",
             "SERVFAIL", (), BLOCKED,
             signals=(verdicts("private-only", ".", "servfail", where="chain"),)),
    Scenario(CORP, "www.example.org", "A", "corp", "not judged", "NOERROR", ("93.184.215.14",),
             signals=(answered(".", "NOERROR"),)),
    # a corporate name for a SaaS's public load balancer: a customer resource, public by
    # design, left out of the protected names
    Scenario(CORP, "webapp.example.com", "A", "corp", "not judged", "NOERROR",
             ("54.95.10.20", "13.112.30.40"), signals=(answered(".", "NOERROR"),)),
    # files.corp.example.com CNAME my-bucket.s3.ap-northeast-3...: judged by the policy of
    # the rule that routes Osaka S3 names, which rewrites to the Interface endpoint
    Scenario(EVERY_PATH, "files.corp.example.com", "A", "corp", "violation -> rewrite",
             "NOERROR", OSAKA_REWRITE, FORGED,
             signals=(verdicts("s3-osaka-rewrite", ".", "rewrite", where="chain"),)),
    # a customer's public load balancer: public by design, left out by `unprotected: default`
    Scenario(EVERY_PATH, ALB, "A", "vpc-gateway", "not judged", "NOERROR",
             ("54.95.10.20", "13.112.30.40"), signals=(answered("amazonaws.com", "NOERROR"),)),
    # config/lab_hook.py pins this name to a public address: the hook's answer is judged too
    Scenario(EVERY_PATH, "s3.eu-west-1.amazonaws.com", "A", "-", "violation -> servfail",
             "SERVFAIL", (), BLOCKED, signals=(EdeText("from hook lab_hook violates policy "
                                                       "private-only"),)),
)
