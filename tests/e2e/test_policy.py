"""Answer policy end to end: every action over UDP and TCP, monitor mode, EDE codes and
texts, TTLs and SOA of synthesised answers, rewrite_cname and fallback through fake
upstreams, CNAME chains, HTTPS hints, additional-section addresses, verdict counters.

The fake upstream `r53` plays a resolver that answers AWS names with public addresses (an
S3 Gateway endpoint VPC); `shared` plays one that answers privately (an inbound endpoint of
a VPC with interface endpoints).
"""

from __future__ import annotations

import gc
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype

from forwarder import config as config_mod
from forwarder import metrics
from tests.conftest import forwarder_config, query, running
from tests.fakes import FakeUpstream, answers, reply

S3 = "s3.ap-northeast-1.amazonaws.com"
BUCKET = f"bucket.{S3}"
VPCE = "vpce-0abc.s3.ap-northeast-1.vpce.amazonaws.com"
ALLOWED = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7"


def blocked_text(group: str = "r53", address: str = "52.219.150.28", name: str = S3) -> str:
    return (f"public address {address} for {name} from group {group} violates policy "
            f"private-only (allowed: {ALLOWED})")


PUBLIC = {
    (S3, "A"): ["A 52.219.150.28"],
    (S3, "AAAA"): ["AAAA 2600:1fa0:80c0::1"],
    (S3, "HTTPS"): ["HTTPS 1 . alpn=h2 ipv4hint=52.219.150.28"],
    (BUCKET, "A"): ["A 52.219.150.29"],
    (f"x.deep.{S3}", "A"): ["A 52.219.150.30"],
    (S3, "MX"): ["MX 10 mx.amazonaws.com."],
    ("mixed.amazonaws.com", "A"): ["A 52.219.150.31", "A 10.0.3.3"],
    ("files.corp.example", "A"): [f"files.corp.example. CNAME {BUCKET}.",
                                  f"{BUCKET}. A 52.219.150.29"],
    (f"bucket.{VPCE}", "A"): ["A 10.0.1.5", "A 10.0.2.5"],
    (VPCE, "A"): ["A 10.0.1.6"],
    ("www.example.com", "A"): ["A 93.184.216.34"],
}


def setup(r53: FakeUpstream, shared: FakeUpstream | None = None, cache: bool = False,
          **policy: Any) -> dict[str, Any]:
    """Zones amazonaws.com and corp.example forward to r53 under policy private-only."""
    groups = {"r53": [r53.addr]}
    if shared is not None:
        groups["shared"] = [shared.addr]
    return forwarder_config(
        groups,
        zones=[{"match": "amazonaws.com", "upstream": "r53", "policy": "private-only"},
               {"match": "corp.example", "upstream": "r53", "policy": "private-only"},
               {"match": ".", "upstream": "r53"}],
        policies={"private-only": policy},
        cache={"enabled": cache})


async def ask(srv: Any, transport: str, name: str, qtype: str = "A") -> dns.message.Message:
    """Asks with EDNS, so that Extended DNS Errors can come back."""
    return await query(srv, transport, name, qtype, use_edns=0)


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.code), o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


def records(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(f"{rrset.name.to_text(omit_final_dot=True)} {rrset.ttl} "
                  f"{dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
                  for rrset in getattr(msg, section) for rd in rrset)


def verdicts(action: str, mode: str = "enforce", rule: str = "amazonaws.com") -> float:
    return sum(metrics.REGISTRY.get_sample_value(
        "forwarder_policy_verdicts_total",
        {"policy": "private-only", "rule": rule, "action": action, "mode": mode,
         "where": where}) or 0.0 for where in ("qname", "chain"))


async def test_servfail_is_the_default(upstream: FakeUpstream, transport: str) -> None:
    """Ask A s3.ap-northeast-1.amazonaws.com; upstream answers 52.219.150.28; expect SERVFAIL
    with EDE 15 naming the address, the name, the group, the policy and the allowed nets."""
    upstream.handler = answers(PUBLIC)
    before = verdicts("servfail")
    async with running(setup(upstream)) as srv:
        r = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.SERVFAIL and r.answer == []
    assert ede(r) == [(15, f"{blocked_text()}; answered SERVFAIL")]
    assert verdicts("servfail") == before + 1


async def test_refuse(upstream: FakeUpstream, transport: str) -> None:
    upstream.handler = answers(PUBLIC)
    async with running(setup(upstream, on_violation="refuse")) as srv:
        r = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.REFUSED
    assert ede(r) == [(15, f"{blocked_text()}; answered REFUSED")]


async def test_nxdomain_and_nodata_carry_soa_with_policy_ttl(upstream: FakeUpstream,
                                                             transport: str) -> None:
    """Synthesised negative answers: SOA of the protected suffix, TTL and MINIMUM = ttl
    (30 by default)."""
    upstream.handler = answers(PUBLIC)
    soa = "amazonaws.com {ttl} SOA forwarder.invalid. hostmaster.forwarder.invalid. 1 3600 " \
          "600 86400 {ttl}"
    async with running(setup(upstream, on_violation="nxdomain")) as srv:
        r = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.NXDOMAIN and r.answer == []
    assert records(r, "authority") == [soa.format(ttl=30)]
    assert ede(r) == [(15, f"{blocked_text()}; answered NXDOMAIN")]
    async with running(setup(upstream, on_violation="nodata", ttl=7)) as srv:
        r = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    assert records(r, "authority") == [soa.format(ttl=7)]
    assert ede(r) == [(15, f"{blocked_text()}; answered NODATA")]


REWRITE = {
    "on_violation": "rewrite",
    "rewrite": {S3: {"A": ["10.0.1.15", "10.0.2.15"]},
                f"*.{S3}": {"A": ["10.0.1.16"], "AAAA": ["fd00::16"]},
                f"*.deep.{S3}": {"A": ["10.0.1.17"]}},
}


async def test_rewrite_exact_and_wildcard_keys(upstream: FakeUpstream, transport: str) -> None:
    """Rewrite: the configured private addresses with the policy TTL and EDE 4; the longest
    wildcard wins; a wildcard does not cover its apex (the exact key does)."""
    upstream.handler = answers(PUBLIC)
    before = verdicts("rewrite")
    async with running(setup(upstream, **REWRITE)) as srv:
        exact = await ask(srv, transport, S3)
        wild = await ask(srv, transport, BUCKET)
        deep = await ask(srv, transport, f"x.deep.{S3}")
    assert exact.rcode() == dns.rcode.NOERROR
    assert records(exact) == [f"{S3} 30 A 10.0.1.15", f"{S3} 30 A 10.0.2.15"]
    assert ede(exact) == [(4, f"{blocked_text()}; rewritten to 10.0.1.15, 10.0.2.15 "
                              f"(rewrite key {S3})")]
    assert records(wild) == [f"{BUCKET} 30 A 10.0.1.16"]
    assert ede(wild)[0][1].endswith(f"(rewrite key *.{S3})")
    assert records(deep) == [f"x.deep.{S3} 30 A 10.0.1.17"]
    assert verdicts("rewrite") == before + 3


async def test_rewrite_aaaa_nodata_and_https(upstream: FakeUpstream, transport: str) -> None:
    """A query type without configured addresses gets NODATA (SOA, EDE 4): AAAA for a key
    with only A, and an HTTPS answer whose ipv4hint is public."""
    upstream.handler = answers(PUBLIC)
    async with running(setup(upstream, **REWRITE, ttl=20)) as srv:
        aaaa = await ask(srv, transport, S3, "AAAA")
        https = await ask(srv, transport, S3, "HTTPS")
    for r, qtype, address in ((aaaa, "AAAA", "2600:1fa0:80c0::1"),
                              (https, "HTTPS", "52.219.150.28")):
        assert r.rcode() == dns.rcode.NOERROR and r.answer == []
        assert records(r, "authority")[0].startswith("amazonaws.com 20 SOA ")
        assert ede(r) == [(4, f"{blocked_text(address=address)}; rewritten to NODATA: "
                              f"rewrite key {S3} has no {qtype} addresses")]


async def test_https_ipv4hint_violation_is_blocked(upstream: FakeUpstream,
                                                   transport: str) -> None:
    upstream.handler = answers(PUBLIC)
    async with running(setup(upstream)) as srv:
        r = await ask(srv, transport, S3, "HTTPS")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede(r) == [(15, f"{blocked_text()}; answered SERVFAIL")]


async def test_rewrite_cname_to_endpoint_specific_name(upstream: FakeUpstream,
                                                       transport: str) -> None:
    """rewrite_cname: CNAME bucket.s3... -> bucket.vpce-0abc.s3...vpce.amazonaws.com, plus
    the private addresses the same upstream gives for that name."""
    upstream.handler = answers(PUBLIC)
    before = verdicts("rewrite_cname")
    cfg = setup(upstream, on_violation="rewrite_cname",
                rewrite={f"*.{S3}": {"CNAME": f"*.{VPCE}"}, S3: {"CNAME": VPCE}})
    async with running(cfg) as srv:
        r = await ask(srv, transport, BUCKET)
        apex = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.NOERROR
    assert records(r) == [f"{BUCKET} 30 CNAME bucket.{VPCE}.", f"bucket.{VPCE} 300 A 10.0.1.5",
                          f"bucket.{VPCE} 300 A 10.0.2.5"]
    assert ede(r) == [(4, f"{blocked_text(address='52.219.150.29', name=BUCKET)}; rewritten "
                          f"to CNAME bucket.{VPCE} (rewrite key *.{S3})")]
    assert records(apex) == [f"{S3} 30 CNAME {VPCE}.", f"{VPCE} 300 A 10.0.1.6"]
    asked = [rx.message.question[0].name.to_text(omit_final_dot=True).lower()
             for rx in upstream.received]
    assert asked == [BUCKET, f"bucket.{VPCE}", S3, VPCE]
    assert verdicts("rewrite_cname") == before + 2


async def test_strip_keeps_private_addresses(upstream: FakeUpstream, transport: str) -> None:
    upstream.handler = answers(PUBLIC)
    async with running(setup(upstream, on_violation="strip")) as srv:
        mixed = await ask(srv, transport, "mixed.amazonaws.com")
        gone = await ask(srv, transport, S3)
    assert mixed.rcode() == dns.rcode.NOERROR
    assert records(mixed) == ["mixed.amazonaws.com 300 A 10.0.3.3"]
    mixed_text = blocked_text(address="52.219.150.31", name="mixed.amazonaws.com")
    assert ede(mixed) == [(15, f"{mixed_text}; stripped 1 record, kept 10.0.3.3")]
    assert gone.rcode() == dns.rcode.NOERROR and gone.answer == []
    assert records(gone, "authority")[0].startswith("amazonaws.com 30 SOA ")
    assert ede(gone)[0][1].endswith("stripped 1 record, no address left: answered NODATA")


async def test_fallback_to_a_group_that_answers_privately(
        upstream: FakeUpstream, upstream2: FakeUpstream, transport: str) -> None:
    """fallback: the shared-services resolver answers privately; its answer is used as is."""
    upstream.handler = answers(PUBLIC)
    upstream2.handler = answers({(S3, "A"): ["A 10.0.1.15"]})
    before = verdicts("fallback")
    async with running(setup(upstream, upstream2, on_violation="fallback",
                             fallback="shared")) as srv:
        r = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.NOERROR
    assert records(r) == [f"{S3} 300 A 10.0.1.15"] and ede(r) == []
    assert len(upstream.received) == 1 and len(upstream2.received) == 1
    assert verdicts("fallback") == before + 1


async def test_fallback_that_also_violates_applies_then(
        upstream: FakeUpstream, upstream2: FakeUpstream, transport: str) -> None:
    upstream.handler = answers(PUBLIC)
    upstream2.handler = answers({(S3, "A"): ["A 52.219.150.99"]})
    before = verdicts("nxdomain")
    async with running(setup(upstream, upstream2, on_violation="fallback", fallback="shared",
                             then="nxdomain")) as srv:
        r = await ask(srv, transport, S3)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert ede(r) == [(15, f"{blocked_text()}; fallback group shared answered public address "
                           "52.219.150.99 too; answered NXDOMAIN")]
    assert verdicts("nxdomain") == before + 1


async def test_on_violation_monitor_passes_and_counts(upstream: FakeUpstream,
                                                      transport: str) -> None:
    upstream.handler = answers(PUBLIC)
    before = verdicts("monitor")
    async with running(setup(upstream, on_violation="monitor")) as srv:
        r = await ask(srv, transport, S3)
    assert records(r) == [f"{S3} 300 A 52.219.150.28"] and ede(r) == []
    assert verdicts("monitor") == before + 1


async def test_mode_monitor_dry_runs_another_action(
        upstream: FakeUpstream, upstream2: FakeUpstream, transport: str) -> None:
    """mode: monitor with on_violation rewrite/fallback: the client gets the upstream answer
    unchanged, without EDE; the would-be action is counted with mode="monitor"."""
    upstream.handler = answers(PUBLIC)
    before = verdicts("rewrite", "monitor"), verdicts("fallback", "monitor")
    async with running(setup(upstream, **REWRITE, mode="monitor")) as srv:
        r = await ask(srv, transport, S3)
    assert records(r) == [f"{S3} 300 A 52.219.150.28"] and ede(r) == []
    async with running(setup(upstream, upstream2, on_violation="fallback", fallback="shared",
                             mode="monitor")) as srv:
        r = await ask(srv, transport, S3)
    assert records(r) == [f"{S3} 300 A 52.219.150.28"] and ede(r) == []
    assert upstream2.received == []
    assert (verdicts("rewrite", "monitor"), verdicts("fallback", "monitor")) == (
        before[0] + 1, before[1] + 1)


async def test_cname_chain_into_protected_suffix(upstream: FakeUpstream,
                                                 transport: str) -> None:
    """files.corp.example CNAME bucket.s3.ap-northeast-1.amazonaws.com -> public A: blocked,
    and a rewrite keeps the CNAME and answers the bucket name privately."""
    upstream.handler = answers(PUBLIC)
    async with running(setup(upstream)) as srv:
        r = await ask(srv, transport, "files.corp.example")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert ede(r) == [(15, f"public address 52.219.150.29 for {BUCKET} (CNAME target of "
                           "files.corp.example) from group r53 violates policy private-only "
                           f"(allowed: {ALLOWED}); answered SERVFAIL")]
    async with running(setup(upstream, **REWRITE)) as srv:
        r = await ask(srv, transport, "files.corp.example")
    assert records(r) == [f"{BUCKET} 30 A 10.0.1.16", f"files.corp.example 30 CNAME {BUCKET}."]


async def test_vpce_names_answering_private_pass(upstream: FakeUpstream,
                                                 transport: str) -> None:
    upstream.handler = answers(PUBLIC)
    before = verdicts("pass")
    async with running(setup(upstream)) as srv:
        r = await ask(srv, transport, f"bucket.{VPCE}")
        plain = await ask(srv, transport, "www.example.com")
    assert records(r) == [f"bucket.{VPCE} 300 A 10.0.1.5", f"bucket.{VPCE} 300 A 10.0.2.5"]
    assert ede(r) == []
    assert records(plain) == ["www.example.com 300 A 93.184.216.34"]
    assert verdicts("pass") == before + 1  # names under no protected suffix are not counted


async def test_additional_addresses_stripped_for_protected_names(
        upstream: FakeUpstream, transport: str) -> None:
    upstream.handler = answers(PUBLIC)

    def with_glue(rx: Any) -> Any:
        return reply(rx.message, "MX 10 mx.amazonaws.com.",
                     additional=["mx.amazonaws.com. A 52.1.2.3", "mx.amazonaws.com. A 10.0.0.25"])

    upstream.handler = with_glue
    async with running(setup(upstream)) as srv:
        r = await ask(srv, transport, S3, "MX")
    assert r.rcode() == dns.rcode.NOERROR
    assert records(r) == [f"{S3} 300 MX 10 mx.amazonaws.com."]
    assert r.additional == [] and ede(r) == []


async def test_policy_answers_are_cached_with_their_ede(upstream: FakeUpstream,
                                                        transport: str) -> None:
    """The cache holds the answer after policy: a second ask does not reach the upstream and
    gets the same rewritten records and EDE."""
    upstream.handler = answers(PUBLIC)
    async with running(setup(upstream, cache=True, **REWRITE)) as srv:
        first = await ask(srv, transport, S3)
        second = await ask(srv, transport, S3)
    assert len(upstream.received) == 1
    assert records(second) == records(first) == [f"{S3} 30 A 10.0.1.15", f"{S3} 30 A 10.0.2.15"]
    assert ede(second) == ede(first) and ede(first)[0][0] == 4


async def test_verdicts_counted_before_a_reload_are_kept(upstream: FakeUpstream) -> None:
    """Verdicts are counted as plain numbers and added to the metric when it is read: a
    reload that replaces the policy (and drops the old policy object) loses none."""
    upstream.handler = lambda rx: reply(rx.message, "A 10.0.1.15")
    before = verdicts("pass")
    async with running(setup(upstream)) as srv:
        for _ in range(3):
            assert (await ask(srv, "udp", S3)).rcode() == dns.rcode.NOERROR
        srv.apply(config_mod.from_data(setup(upstream, ttl=60)))
        gc.collect()  # the replaced runtime and its policy objects are gone
        assert verdicts("pass") == before + 3
