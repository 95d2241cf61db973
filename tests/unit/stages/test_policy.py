"""Answer-policy decisions on wire messages: verdicts, every action, EDE codes and texts,
synthesised records and TTLs, metrics and log lines. No sockets: upstream answers are wire
built with dnspython, and upstream groups are fakes that answer from a table.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import metrics
from forwarder.config import model
from forwarder.dns.reply import read as read_reply
from forwarder.errors import UpstreamError
from forwarder.query import Query, Reply
from forwarder.stages import policy as policy_mod
from forwarder.stages.policy import AnswerPolicy
from forwarder.stages.policy.actions import substitute
from tests.fakes import reply as fake_reply

S3 = "s3.ap-northeast-1.amazonaws.com"
BUCKET = f"bucket.{S3}"
VPCE = "vpce-0abc.s3.ap-northeast-1.vpce.amazonaws.com"
ALLOWED_TEXT = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7"
RULE = model.Rule(0, "amazonaws.com", "amazonaws.com", model.RuleAction.FORWARD,
                  upstream="r53-inbound", policy="private-only")
CORP_RULE = model.Rule(1, "corp.example", "corp.example", model.RuleAction.FORWARD,
                       upstream="r53-inbound", policy="private-only")


def client_query(name: str, qtype: str = "A", rule: model.Rule = RULE,
                 trace: bool = False) -> Query:
    """The Query the pipeline holds for a client asking *name*/*qtype* with EDNS."""
    msg = dns.message.make_query(name, qtype, use_edns=0)
    q = Query.from_wire(msg.to_wire(), ("10.9.8.7", 40000), "udp", 0.0)
    q.rule = rule
    if trace:
        q.trace = []
    return q


def upstream_answer(name: str, qtype: str = "A", *records: str, rcode: int = 0,
                    additional: tuple[str, ...] = (), authority: tuple[str, ...] = (),
                    server: str = "10.10.0.10:53") -> Reply:
    """An upstream reply as a group hands it to the pipeline: no OPT record."""
    msg = dns.message.make_query(name, qtype, use_edns=False)
    wire = fake_reply(msg, *records, rcode=rcode, additional=additional,
                      authority=authority).to_wire()
    return Reply(wire, rcode, "upstream", (), server)


class FakeGroup:
    """An upstream group answering `ask`/`exchange` from {(name, type): Reply | Exception}."""

    def __init__(self, name: str, table: dict[tuple[str, str], Reply | Exception] | None = None):
        self.name = name
        self.table = table or {}
        self.asked: list[tuple[str, str, bool]] = []

    async def ask(self, question: bytes, qname: bytes, qtype: int, qclass: int,
                  flags: int = 0x100, do: bool = False, q: Query | None = None) -> Reply:
        name = dns.name.from_wire(qname, 0)[0].to_text(omit_final_dot=True)
        type_text = dns.rdatatype.to_text(qtype)
        self.asked.append((name, type_text, do))
        answer = self.table.get((name, type_text))
        if answer is None:
            raise UpstreamError(22, f"no upstream in group {self.name} answered: 1.2.3.4 timed out")
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def exchange(self, q: Query) -> Reply:
        return await self.ask(q.question, q.qname, q.qtype, q.qclass, q.flags, q.do, q)


def make_policy(**fields: Any) -> AnswerPolicy:
    fields.setdefault("name", "private-only")
    return AnswerPolicy(model.Policy(**fields))


async def run(policy: AnswerPolicy, q: Query, upstream: Reply,
              *others: FakeGroup, group: FakeGroup | None = None) -> Reply:
    group = group or FakeGroup("r53-inbound")
    return await policy.apply(q, upstream, group,  # type: ignore[arg-type]
                              {g.name: g for g in (group, *others)})


def client_view(q: Query, reply: Reply) -> dns.message.Message:
    """What the client receives, parsed."""
    return dns.message.from_wire(reply.to_client(q))


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(o.code, o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


def records(msg: dns.message.Message, section: str = "answer") -> list[str]:
    """The records of *section*, one text each, sorted (dnspython shuffles RRsets)."""
    return sorted(f"{rrset.name.to_text(omit_final_dot=True)} {rrset.ttl} "
            f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
            for rrset in getattr(msg, section) for rd in rrset)


def verdicts(action: str, mode: str = "enforce", rule: str = "amazonaws.com",
             policy: str = "private-only") -> float:
    return sum(metrics.REGISTRY.get_sample_value(
        "forwarder_policy_verdicts_total",
        {"policy": policy, "rule": rule, "action": action, "mode": mode, "where": where})
        or 0.0 for where in ("qname", "chain"))


PUBLIC_S3 = upstream_answer(S3, "A", "A 52.219.150.28")
BLOCKED_TEXT = (f"public address 52.219.150.28 for {S3} from group r53-inbound violates "
                f"policy private-only (allowed: {ALLOWED_TEXT})")


# --- verdicts --------------------------------------------------------------------------------


async def test_not_protected_answer_passes_untouched_and_uncounted() -> None:
    """A name under no protected suffix: the same reply object, verdict not_protected."""
    p = make_policy()
    q = client_query("www.example.com", trace=True)
    upstream = upstream_answer("www.example.com", "A", "A 93.184.216.34")
    before = verdicts("pass")
    out = await run(p, q, upstream)
    assert out is upstream
    assert (out.verdict, out.action) == ("not_protected", None)
    assert verdicts("pass") == before
    assert q.trace and "not judged" in q.trace[-1]


async def test_label_that_only_looks_protected_is_not_judged() -> None:
    """`aws` appears as a label (the quick test hits) but no name is under api.aws."""
    p = make_policy()
    q = client_query("aws.example.com")
    upstream = upstream_answer("aws.example.com", "A", "A 93.184.216.34")
    out = await run(p, q, upstream)
    assert out is upstream
    assert out.verdict == "not_protected"


async def test_mixed_case_protected_name_is_judged() -> None:
    """The quick label test ignores letter case, as the judgement does."""
    p = make_policy()
    q = client_query("S3.AP-Northeast-1.AmazonAWS.COM")
    upstream = upstream_answer("S3.AP-Northeast-1.AmazonAWS.COM", "A", "A 52.219.150.28")
    out = await run(p, q, upstream)
    assert out.rcode == dns.rcode.SERVFAIL and out.verdict == "violation"


async def test_protected_private_answer_passes_and_is_counted() -> None:
    p = make_policy()
    q = client_query(S3, trace=True)
    upstream = upstream_answer(S3, "A", "A 10.0.1.15", "A 10.0.2.15")
    before = verdicts("pass")
    out = await run(p, q, upstream)
    assert out is upstream
    assert (out.verdict, out.action) == ("pass", "pass")
    assert verdicts("pass") == before + 1
    [step] = q.trace or []
    assert re.fullmatch(rf"policy private-only: {re.escape(S3)} is protected \(under "
                        r"amazonaws\.com\); "
                        r"(10\.0\.1\.15, 10\.0\.2\.15|10\.0\.2\.15, 10\.0\.1\.15) "
                        "allowed: pass", step)


@pytest.mark.parametrize("name", [
    "vpce-0abc-xyz.s3.ap-northeast-1.vpce.amazonaws.com",
    "vpce-0abc-xyz-ap-northeast-1a.s3.ap-northeast-1.vpce.amazonaws.com",
    f"bucket.{VPCE}",
])
async def test_endpoint_specific_names_answering_private_pass(name: str) -> None:
    """vpce names live in public zones but resolve to private addresses: they pass."""
    p = make_policy()
    q = client_query(name)
    upstream = upstream_answer(name, "A", "A 10.0.1.5")
    out = await run(p, q, upstream)
    assert out is upstream
    assert out.verdict == "pass"


async def test_root_suffix_protects_every_name() -> None:
    """protected: ["."] judges every answer (the quick label test is off)."""
    p = make_policy(protected=(".",))
    q = client_query("www.example.com")
    out = await run(p, q, upstream_answer("www.example.com", "A", "A 93.184.216.34"))
    assert out.rcode == dns.rcode.SERVFAIL and out.verdict == "violation"


@pytest.mark.parametrize(("qtype", "record", "violation"), [
    ("AAAA", "AAAA 2600:1f18::1", True),
    ("AAAA", "AAAA fd00::5", False),
    ("AAAA", "AAAA ::ffff:52.219.1.1", True),
    ("AAAA", "AAAA ::ffff:10.0.0.1", False),
    ("AAAA", "AAAA 64:ff9b::34db:101", True),
    ("AAAA", "AAAA 64:ff9b::a00:1", False),
    ("HTTPS", "HTTPS 1 . alpn=h2 ipv4hint=52.219.1.1", True),
    ("HTTPS", "HTTPS 1 . alpn=h2 ipv6hint=2600::1", True),
    ("HTTPS", "HTTPS 1 . alpn=h2 ipv4hint=10.0.0.9 ipv6hint=fd00::9", False),
    ("HTTPS", "HTTPS 1 .", False),
])
async def test_classification_ipv6_mapped_nat64_and_https_hints(
        qtype: str, record: str, violation: bool) -> None:
    p = make_policy()
    q = client_query(S3, qtype)
    out = await run(p, q, upstream_answer(S3, qtype, record))
    assert out.verdict == ("violation" if violation else "pass")
    assert out.rcode == (dns.rcode.SERVFAIL if violation else dns.rcode.NOERROR)


async def test_operator_ipv6_vpc_range_and_public_range_are_allowed() -> None:
    """An operator's global-looking IPv6 VPC range and a publicly routable private range
    (listed in allowed) pass; the defaults are replaced, so 10/8 no longer does."""
    p = make_policy(allowed=("2406:da14:abc::/56", "203.0.113.0/24"))
    for qtype, record, verdict in [("AAAA", "AAAA 2406:da14:abc:ff::5", "pass"),
                                   ("A", "A 203.0.113.7", "pass"),
                                   ("A", "A 10.0.0.1", "violation")]:
        q = client_query(S3, qtype)
        out = await run(p, q, upstream_answer(S3, qtype, record))
        assert out.verdict == verdict, record


async def test_operator_protected_suffixes_replace_the_defaults() -> None:
    p = make_policy(protected=("privatelink.example.net",))
    q = client_query("svc.privatelink.example.net")
    out = await run(p, q, upstream_answer("svc.privatelink.example.net", "A", "A 198.51.100.1"))
    assert out.verdict == "violation"
    q = client_query(S3)
    out = await run(p, q, upstream_answer(S3, "A", "A 52.219.150.28"))
    assert out.verdict == "not_protected"


@pytest.mark.parametrize("chain", [
    # into a protected suffix
    ["files.corp.example. CNAME bucket.s3.ap-northeast-1.amazonaws.com.",
     "bucket.s3.ap-northeast-1.amazonaws.com. A 52.219.150.28"],
    # out of a protected suffix and back in
    ["files.corp.example. CNAME edge.cdn.example.net.",
     "edge.cdn.example.net. CNAME bucket.s3.ap-northeast-1.amazonaws.com.",
     "bucket.s3.ap-northeast-1.amazonaws.com. A 52.219.150.28"],
])
async def test_cname_chain_into_protected_suffix_is_judged(chain: list[str]) -> None:
    p = make_policy()
    q = client_query("files.corp.example", rule=CORP_RULE)
    out = await run(p, q, upstream_answer("files.corp.example", "A", *chain))
    assert out.rcode == dns.rcode.SERVFAIL
    assert ede(client_view(q, out)) == [(15, (
        f"public address 52.219.150.28 for {BUCKET} (CNAME target of files.corp.example) "
        f"from group r53-inbound violates policy private-only (allowed: {ALLOWED_TEXT}); "
        "answered SERVFAIL"))]


async def test_chain_leaving_protected_suffix_is_judged() -> None:
    """A protected query name CNAMEd to a CDN name with a public address is a violation."""
    p = make_policy()
    q = client_query(S3)
    out = await run(p, q, upstream_answer(S3, "A", f"{S3}. CNAME d1.cloudfront.example.",
                                    "d1.cloudfront.example. A 13.32.0.1"))
    assert out.verdict == "violation"


# --- blocking actions ------------------------------------------------------------------------


async def test_servfail_is_the_default_with_ede_15() -> None:
    p = make_policy()
    q = client_query(S3)
    before = verdicts("servfail")
    out = await run(p, q, PUBLIC_S3)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.SERVFAIL and msg.answer == []
    assert out.answered_by == "policy"
    assert ede(msg) == [(15, f"{BLOCKED_TEXT}; answered SERVFAIL")]
    assert (out.verdict, out.action) == ("violation", "servfail")
    assert verdicts("servfail") == before + 1


async def test_refuse() -> None:
    p = make_policy(on_violation=model.Violation.REFUSE)
    q = client_query(S3)
    out = await run(p, q, PUBLIC_S3)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.REFUSED
    assert ede(msg) == [(15, f"{BLOCKED_TEXT}; answered REFUSED")]


@pytest.mark.parametrize(("action", "rcode", "shown"), [
    (model.Violation.NXDOMAIN, dns.rcode.NXDOMAIN, "NXDOMAIN"),
    (model.Violation.NODATA, dns.rcode.NOERROR, "NODATA"),
])
async def test_negative_answers_carry_soa_with_policy_ttl(action: model.Violation, rcode: int,
                                                          shown: str) -> None:
    p = make_policy(on_violation=action, ttl=45)
    q = client_query(S3)
    out = await run(p, q, PUBLIC_S3)
    msg = client_view(q, out)
    assert msg.rcode() == rcode and msg.answer == []
    assert records(msg, "authority") == [
        "amazonaws.com 45 SOA forwarder.invalid. hostmaster.forwarder.invalid. 1 3600 600 "
        "86400 45"]
    assert ede(msg) == [(15, f"{BLOCKED_TEXT}; answered {shown}")]


async def test_negative_answer_for_a_cname_question_uses_the_rule_zone() -> None:
    """The SOA must be an ancestor of the question: the rule's zone when the protected name
    was reached through a CNAME from outside the protected suffixes."""
    p = make_policy(on_violation=model.Violation.NXDOMAIN)
    q = client_query("files.corp.example", rule=CORP_RULE)
    upstream = upstream_answer("files.corp.example", "A", f"files.corp.example. CNAME {BUCKET}.",
                               f"{BUCKET}. A 52.219.150.28")
    out = await run(p, q, upstream)
    msg = client_view(q, out)
    assert records(msg, "authority")[0].startswith("corp.example 30 SOA ")


async def test_default_synthesised_ttl_is_30() -> None:
    p = make_policy(on_violation=model.Violation.NODATA)
    q = client_query(S3)
    out = await run(p, q, PUBLIC_S3)
    msg = client_view(q, out)
    assert msg.authority[0].ttl == 30 and msg.authority[0][0].minimum == 30


# --- strip -----------------------------------------------------------------------------------


async def test_strip_keeps_allowed_addresses() -> None:
    p = make_policy(on_violation=model.Violation.STRIP)
    q = client_query(S3)
    upstream = upstream_answer(S3, "A", "A 52.219.150.28", "A 10.0.1.15", "A 52.219.150.29")
    before = verdicts("strip")
    out = await run(p, q, upstream)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.NOERROR
    assert records(msg) == [f"{S3} 300 A 10.0.1.15"]  # upstream TTL kept
    [(code, text)] = ede(msg)
    shown = text.removeprefix("public addresses ").split(" for ")[0]
    assert code == 15 and sorted(shown.split(", ")) == ["52.219.150.28", "52.219.150.29"]
    assert text.endswith(f" for {S3} from group r53-inbound violates policy private-only "
                         f"(allowed: {ALLOWED_TEXT}); stripped 2 records, kept 10.0.1.15")
    assert verdicts("strip") == before + 1


async def test_strip_keeps_the_chain_and_drops_additional_addresses() -> None:
    p = make_policy(on_violation=model.Violation.STRIP)
    q = client_query("files.corp.example", rule=CORP_RULE)
    upstream = upstream_answer(
        "files.corp.example", "A", f"files.corp.example. CNAME {BUCKET}.",
        f"{BUCKET}. A 52.219.150.28", f"{BUCKET}. A 10.0.1.15",
        additional=("ns1.amazonaws.com. A 10.0.0.2",))
    out = await run(p, q, upstream)
    msg = client_view(q, out)
    assert records(msg) == sorted([f"files.corp.example 300 CNAME {BUCKET}.",
                            f"{BUCKET} 300 A 10.0.1.15"])
    assert msg.additional == []


async def test_strip_with_nothing_left_is_nodata() -> None:
    p = make_policy(on_violation=model.Violation.STRIP)
    q = client_query(S3, "HTTPS")
    upstream = upstream_answer(S3, "HTTPS", "HTTPS 1 . alpn=h2 ipv4hint=52.219.1.1,10.0.0.1")
    out = await run(p, q, upstream)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    assert records(msg, "authority")[0].startswith("amazonaws.com 30 SOA ")
    assert ede(msg)[0][1].endswith("; stripped 1 record, no address left: answered NODATA")


# --- rewrite ---------------------------------------------------------------------------------

REWRITES = (
    (S3, model.RewriteTarget(a=("10.0.1.15", "10.0.2.15"))),
    (f"*.{S3}", model.RewriteTarget(a=("10.0.1.16",), aaaa=("fd00::16",))),
    (f"*.deep.{S3}", model.RewriteTarget(a=("10.0.1.17",))),
)


async def test_rewrite_exact_key() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE, rewrite=REWRITES)
    q = client_query(S3)
    before = verdicts("rewrite")
    out = await run(p, q, PUBLIC_S3)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.NOERROR and out.answered_by == "policy"
    assert records(msg) == sorted([f"{S3} 30 A 10.0.1.15", f"{S3} 30 A 10.0.2.15"])
    assert ede(msg) == [(4, f"{BLOCKED_TEXT}; rewritten to 10.0.1.15, 10.0.2.15 "
                            f"(rewrite key {S3})")]
    assert out.action == "rewrite" and verdicts("rewrite") == before + 1


@pytest.mark.parametrize(("name", "expected"), [
    (BUCKET, "10.0.1.16"),
    (f"a.b.{S3}", "10.0.1.16"),
    (f"x.deep.{S3}", "10.0.1.17"),  # the longest wildcard wins
    (f"deep.{S3}", "10.0.1.16"),  # a wildcard does not cover its own apex
])
async def test_rewrite_wildcard_keys(name: str, expected: str) -> None:
    p = make_policy(on_violation=model.Violation.REWRITE, rewrite=REWRITES, ttl=12)
    q = client_query(name)
    out = await run(p, q, upstream_answer(name, "A", "A 52.219.150.28"))
    msg = client_view(q, out)
    assert records(msg) == [f"{name} 12 A {expected}"]


async def test_rewrite_aaaa_without_configured_addresses_is_nodata() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE, rewrite=REWRITES)
    q = client_query(S3, "AAAA")
    out = await run(p, q, upstream_answer(S3, "AAAA", "AAAA 2600:1f18::1"))
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    assert records(msg, "authority")[0].startswith("amazonaws.com 30 SOA ")
    assert ede(msg)[0] == (4, (
        f"public address 2600:1f18::1 for {S3} from group r53-inbound violates policy "
        f"private-only (allowed: {ALLOWED_TEXT}); rewritten to NODATA: rewrite key {S3} "
        "has no AAAA addresses"))
    q = client_query(BUCKET, "AAAA")
    out = await run(p, q, upstream_answer(BUCKET, "AAAA", "AAAA 2600:1f18::1"))
    msg = client_view(q, out)
    assert records(msg) == [f"{BUCKET} 30 AAAA fd00::16"]


async def test_rewrite_https_with_public_hint_is_nodata() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE, rewrite=REWRITES)
    q = client_query(S3, "HTTPS")
    msg = client_view(q, await run(p, q, upstream_answer(
        S3, "HTTPS", "HTTPS 1 . alpn=h2 ipv4hint=52.219.150.28")))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
    assert ede(msg)[0][0] == 4 and ede(msg)[0][1].endswith("has no HTTPS addresses")


async def test_rewrite_keeps_the_cname_chain_up_to_the_key() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE, rewrite=REWRITES)
    q = client_query("files.corp.example", rule=CORP_RULE)
    upstream = upstream_answer("files.corp.example", "A", f"files.corp.example. CNAME {BUCKET}.",
                               f"{BUCKET}. CNAME s3-r-w.ap-northeast-1.amazonaws.com.",
                               "s3-r-w.ap-northeast-1.amazonaws.com. A 52.219.150.28")
    out = await run(p, q, upstream)
    msg = client_view(q, out)
    assert records(msg) == sorted([f"files.corp.example 30 CNAME {BUCKET}.",
                            f"{BUCKET} 30 A 10.0.1.16"])


async def test_rewrite_without_matching_key_applies_then() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE, rewrite=REWRITES,
                    then=model.Violation.NXDOMAIN)
    q = client_query("ssm.ap-northeast-1.amazonaws.com")
    out = await run(p, q, upstream_answer("ssm.ap-northeast-1.amazonaws.com", "A",
                                          "A 52.119.1.1"))
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert ede(msg)[0][1].endswith(
        "; no rewrite key matches ssm.ap-northeast-1.amazonaws.com; answered NXDOMAIN")
    assert out.action == "nxdomain"


# --- rewrite_cname ---------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "key", "name", "expected"), [
    (f"*.{VPCE}", f"*.{S3}", BUCKET, f"bucket.{VPCE}"),
    (f"*.{VPCE}", f"*.{S3}", f"a.b.{S3}", f"a.b.{VPCE}"),
    (f"*.{VPCE}", S3, S3, VPCE),  # exact key: no labels, the "*." is dropped
    (VPCE, f"*.{S3}", BUCKET, VPCE),  # a plain target is used as it is
])
def test_substitute(target: str, key: str, name: str, expected: str) -> None:
    assert substitute(target, key, name) == expected


CNAME_REWRITES = (
    (S3, model.RewriteTarget(cname=VPCE)),
    (f"*.{S3}", model.RewriteTarget(cname=f"*.{VPCE}")),
)


async def test_rewrite_cname_answers_target_through_same_group() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE_CNAME, rewrite=CNAME_REWRITES)
    target = f"bucket.{VPCE}"
    group = FakeGroup("r53-inbound", {
        (target, "A"): upstream_answer(target, "A", "A 10.0.1.5", "A 10.0.2.5")})
    q = client_query(BUCKET)
    before = verdicts("rewrite_cname")
    out = await run(p, q, upstream_answer(BUCKET, "A", "A 52.219.150.28"), group=group)
    msg = client_view(q, out)
    assert group.asked == [(target, "A", False)]
    assert records(msg) == sorted([f"{BUCKET} 30 CNAME {target}.", f"{target} 300 A 10.0.1.5",
                            f"{target} 300 A 10.0.2.5"])
    assert ede(msg) == [(4, (
        f"public address 52.219.150.28 for {BUCKET} from group r53-inbound violates policy "
        f"private-only (allowed: {ALLOWED_TEXT}); rewritten to CNAME {target} "
        f"(rewrite key *.{S3})"))]
    assert out.action == "rewrite_cname" and verdicts("rewrite_cname") == before + 1


async def test_rewrite_cname_target_public_or_failing_applies_then() -> None:
    p = make_policy(on_violation=model.Violation.REWRITE_CNAME, rewrite=CNAME_REWRITES)
    group = FakeGroup("r53-inbound", {(VPCE, "A"): upstream_answer(VPCE, "A", "A 3.3.3.3")})
    q = client_query(S3)
    out = await run(p, q, PUBLIC_S3, group=group)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert ede(msg)[0] == (15, (
        f"{BLOCKED_TEXT}; rewrite_cname target {VPCE}: it resolved to public address "
        "3.3.3.3, outside the allowed networks; answered SERVFAIL"))
    q = client_query(BUCKET)
    msg = client_view(q, await run(p, q, upstream_answer(BUCKET, "A", "A 52.219.150.28"),
                                   group=FakeGroup("r53-inbound")))
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert f"rewrite_cname target bucket.{VPCE} did not resolve: no upstream" in ede(msg)[0][1]


async def test_rewrite_cname_then_rewrite_to_addresses() -> None:
    """then: rewrite gives the static addresses when the endpoint name does not resolve."""
    rewrite = ((S3, model.RewriteTarget(a=("10.0.1.15",), cname=VPCE)),)
    p = make_policy(on_violation=model.Violation.REWRITE_CNAME, rewrite=rewrite,
                    then=model.Violation.REWRITE)
    q = client_query(S3)
    out = await run(p, q, PUBLIC_S3)
    msg = client_view(q, out)
    assert records(msg) == [f"{S3} 30 A 10.0.1.15"]
    assert ede(msg)[0][0] == 4 and out.action == "rewrite"


# --- fallback --------------------------------------------------------------------------------


async def test_fallback_answer_that_passes_is_used() -> None:
    p = make_policy(on_violation=model.Violation.FALLBACK, fallback="shared")
    shared = FakeGroup("shared", {(S3, "A"): upstream_answer(
        S3, "A", "A 10.0.1.15", additional=("ns.amazonaws.com. A 205.251.192.1",),
        server="10.20.0.10:53")})
    q = client_query(S3, trace=True)
    before = verdicts("fallback")
    out = await run(p, q, PUBLIC_S3, shared)
    msg = client_view(q, out)
    assert records(msg) == [f"{S3} 300 A 10.0.1.15"] and msg.additional == []
    assert ede(msg) == []
    assert (out.answered_by, out.server) == ("policy", "10.20.0.10:53")
    assert (out.verdict, out.action) == ("violation", "fallback")
    assert verdicts("fallback") == before + 1
    assert any("asking fallback group shared" in step for step in q.trace or ())


@pytest.mark.parametrize("fallback_answer", [
    upstream_answer(S3, "A", "A 52.219.150.99"),
    UpstreamError(22, "no upstream in group shared answered: 10.20.0.10:53 timed out"),
])
async def test_fallback_that_violates_or_fails_applies_then(
        fallback_answer: Reply | Exception) -> None:
    p = make_policy(on_violation=model.Violation.FALLBACK, fallback="shared",
                    then=model.Violation.REFUSE)
    shared = FakeGroup("shared", {(S3, "A"): fallback_answer})
    q = client_query(S3)
    before = verdicts("refuse")
    out = await run(p, q, PUBLIC_S3, shared)
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.REFUSED
    text = ede(msg)[0][1]
    assert text.startswith(BLOCKED_TEXT) and text.endswith("; answered REFUSED")
    if isinstance(fallback_answer, Reply):
        assert "; fallback group shared answered public address 52.219.150.99 too;" in text
    else:
        assert "; fallback group shared failed: no upstream in group shared answered" in text
    assert out.action == "refuse" and verdicts("refuse") == before + 1


async def test_fallback_then_strip_strips_the_fallback_answer() -> None:
    p = make_policy(on_violation=model.Violation.FALLBACK, fallback="shared",
                    then=model.Violation.STRIP)
    shared = FakeGroup("shared", {(S3, "A"): upstream_answer(S3, "A", "A 52.219.150.99",
                                                             "A 10.0.1.15")})
    q = client_query(S3)
    out = await run(p, q, PUBLIC_S3, shared)
    msg = client_view(q, out)
    assert records(msg) == [f"{S3} 300 A 10.0.1.15"]


# --- monitor ---------------------------------------------------------------------------------


async def test_on_violation_monitor_passes_unchanged_and_logs(
        caplog: pytest.LogCaptureFixture) -> None:
    p = make_policy(on_violation=model.Violation.MONITOR)
    q = client_query(S3)
    before = verdicts("monitor")
    with caplog.at_level(logging.WARNING, logger="forwarder.policy"):
        out = await run(p, q, PUBLIC_S3)
        assert out is PUBLIC_S3
    assert (out.verdict, out.action) == ("violation", "monitor")
    assert verdicts("monitor") == before + 1
    [line] = [r for r in caplog.records if r.name == "forwarder.policy"]
    assert line.getMessage() == (
        "policy violation policy=private-only mode=enforce rule=amazonaws.com "
        f"group=r53-inbound client=10.9.8.7 name={S3} type=A addresses=52.219.150.28 "
        "action=monitor")
    assert line.addresses == ["52.219.150.28"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("action", list(model.Violation))
async def test_mode_monitor_dry_runs_every_action(action: model.Violation) -> None:
    """mode: monitor passes the upstream answer unchanged (no EDE), never asks another
    group, and counts the action that would have been taken."""
    p = make_policy(on_violation=action, mode=model.PolicyMode.MONITOR, fallback="shared",
                    rewrite=(*REWRITES, (f"*.{VPCE}", model.RewriteTarget(cname=VPCE))))
    shared = FakeGroup("shared")
    q = client_query(S3)
    before = verdicts(action.value, "monitor")
    out = await run(p, q, PUBLIC_S3, shared)
    assert out is PUBLIC_S3
    assert shared.asked == []
    assert (out.verdict, out.action) == ("violation", action.value)
    assert verdicts(action.value, "monitor") == before + 1


async def test_mode_monitor_keeps_additional_addresses() -> None:
    p = make_policy(mode=model.PolicyMode.MONITOR)
    q = client_query(S3)
    upstream = upstream_answer(S3, "A", "A 10.0.1.15", additional=("ns.amazonaws.com. A 1.1.1.1",))
    out = await run(p, q, upstream)
    assert out is upstream
    assert out.verdict == "pass"


# --- additional section, malformed answers, text limits --------------------------------------


async def test_additional_addresses_are_stripped_for_protected_names() -> None:
    p = make_policy()
    q = client_query(S3, "MX")
    upstream = upstream_answer(S3, "MX", "MX 10 mx.amazonaws.com.",
                               additional=("mx.amazonaws.com. A 52.1.1.1",
                                           "mx.amazonaws.com. AAAA fd00::1"))
    out = await run(p, q, upstream)
    msg = client_view(q, out)
    assert records(msg) == [f"{S3} 300 MX 10 mx.amazonaws.com."]
    assert msg.additional == [] and ede(msg) == []
    assert out.answered_by == "upstream" and out.verdict == "pass"


async def test_additional_addresses_kept_for_unprotected_names() -> None:
    p = make_policy()
    q = client_query("example.com", "MX")
    upstream = upstream_answer("example.com", "MX", "MX 10 mx.example.com.",
                               additional=("mx.example.com. A 93.184.216.34",))
    out = await run(p, q, upstream)
    assert out is upstream


async def test_unreadable_answer_fails_closed() -> None:
    p = make_policy()
    q = client_query(S3)
    good = PUBLIC_S3.wire
    bad = good[:-6] + b"\x00\x05" + good[-4:] + b"\x00"  # A record with rdlength 5
    out = await run(p, q, Reply(bad, 0, "upstream"))
    msg = client_view(q, out)
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert ede(msg)[0][0] == 15
    assert ede(msg)[0][1].startswith(f"answer for {S3} from group r53-inbound cannot be "
                                     "checked by policy private-only: ")


async def test_long_address_and_network_lists_are_shortened() -> None:
    allowed = tuple(f"10.{i}.0.0/16" for i in range(10))
    p = make_policy(allowed=allowed)
    q = client_query(S3)
    upstream = upstream_answer(S3, "A", *(f"A 52.219.150.{i}" for i in range(1, 6)))
    text = ede(client_view(q, await run(p, q, upstream)))[0][1]
    assert re.match(rf"public addresses (52\.219\.150\.\d, ){{2}}52\.219\.150\.\d and 2 more "
                    rf"for {re.escape(S3)} ", text)
    assert "(allowed: 10.0.0.0/16, 10.1.0.0/16, 10.2.0.0/16, 10.3.0.0/16, 10.4.0.0/16, " \
           "10.5.0.0/16 and 4 more)" in text


def test_build_compiles_every_policy() -> None:
    cfg = model.Config("<test>", (), (), (), (), policies=(
        model.Policy("a"), model.Policy("b", mode=model.PolicyMode.MONITOR)))
    policies = policy_mod.build(cfg)
    assert sorted(policies) == ["a", "b"]
    assert policies["b"].monitor_only and not policies["a"].monitor_only
    assert policies["a"].protects(S3)


@pytest.mark.parametrize(("name", "qtype", "records", "additional"), [
    (S3, "A", ("A 10.0.1.15",), ()),  # protected, allowed
    (S3, "A", ("A 52.219.1.1",), ()),  # protected, public: a violation
    (S3, "AAAA", ("AAAA fd00::15", "AAAA 2600:1f18::1"), ()),  # one of two outside
    (S3, "A", ("A 10.0.1.15", "A 10.0.1.16"), ("ns.example. A 52.219.9.9",)),  # additional
    (S3, "A", (f"{S3}. CNAME {VPCE}.", f"{VPCE}. A 52.219.2.2"), ()),  # a chain
    (S3, "HTTPS", ("HTTPS 1 . alpn=h2 ipv4hint=52.219.3.3",), ()),  # hints
    (S3, "TXT", ('TXT "v=1"',), ()),  # no address at all
    ("www.corp.example", "A", ("A 52.219.1.1",), ()),  # not protected
    # a "." inside a label, and the suffix's longest label elsewhere in the message
    ("a\\.amazonaws.com", "A", ("A 52.219.1.1",), ('ns.amazonaws.com. TXT "x"',)),
])
async def test_quick_judgement_agrees_with_the_full_scan(
        name: str, qtype: str, records: tuple[str, ...], additional: tuple[str, ...]) -> None:
    """An upstream reply carries its index; the policy judges the common shapes (a `plain`
    index) without building the answer's names and addresses. What the client gets, the
    verdict and the counted action must be the same as for the same answer judged in full
    (which `forwarder explain`'s tracing forces)."""
    outcomes = []
    answer = upstream_answer(name, qtype, *records, additional=additional)
    indexed = Reply(answer.wire, 0, "upstream", (), answer.server, read_reply(answer.wire))
    for traced in (False, True):
        pol = make_policy(on_violation=model.Violation.NXDOMAIN)
        q = client_query(name, qtype, trace=traced)
        upstream = indexed
        metrics.PENDING.flush()  # what was counted before this answer
        out = await pol.apply(q, upstream, FakeGroup("r53-inbound"), {})  # type: ignore[arg-type]
        counted = dict(metrics.policy_verdict_counts.counts)
        outcomes.append((out.wire[2:], out.rcode, out.ede, out.verdict, out.action, counted))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][3] in ("pass", "violation", "not_protected")
