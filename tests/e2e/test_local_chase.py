"""A local CNAME out of its zone, followed as a resolver chases a CNAME: the PrivateLink
field report's shape (a private name aliased to the endpoint's DNS name), the target
judged by the policy of the rule that routes it, other local zones, loops and long chains,
failures, the cache, hooks and the query log.

`r53` plays a Route 53 Resolver inbound endpoint: the endpoint-specific names of a
PrivateLink service answer with its private ENI addresses; `bad.vpce...` answers public.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import metrics
from forwarder.pipeline import chase
from tests.conftest import forwarder_config, logged_queries, query, running
from tests.fakes import FakeUpstream, answers, reply

VPCE = "vpce-0def456-abc.vpce-svc-0123456789abcdef0.ap-northeast-1.vpce.amazonaws.com"
BAD = "bad.vpce-svc-0123456789abcdef0.ap-northeast-1.vpce.amazonaws.com"
R53 = {
    (VPCE, "A"): ["A 10.0.5.10", "A 10.0.6.10"],
    (VPCE, "AAAA"): ["AAAA fd00:5::10"],
    (VPCE, "HTTPS"): ["HTTPS 1 . alpn=h2 ipv4hint=10.0.5.10"],
    (BAD, "A"): ["A 52.219.150.28"],
}
RECORDS: list[dict[str, Any]] = [
    {"name": "saas.example.com", "type": "CNAME", "value": VPCE},
    {"name": "portal.example.com", "type": "CNAME", "value": "saas.example.com"},
    {"name": "leaky.example.com", "type": "CNAME", "value": BAD},
    {"name": "gone.example.com", "type": "CNAME", "value": f"gone.{VPCE}"},
    {"name": "other.example.com", "type": "CNAME", "value": "host.other.test"},
    {"name": "loop.example.com", "type": "CNAME", "value": "loop.other.test"},
    {"name": "nowhere.example.com", "type": "CNAME", "value": "www.unrouted.invalid"},
]
OTHER: list[dict[str, Any]] = [
    {"name": "host.other.test", "type": "A", "value": "10.0.9.9"},
    {"name": "loop.other.test", "type": "CNAME", "value": "loop.example.com"},
]


@pytest.fixture
async def r53() -> Any:
    async with FakeUpstream(answers(R53)) as fake:
        yield fake


def setup(r53: FakeUpstream, records: list[dict[str, Any]] = RECORDS,
          **extra: Any) -> dict[str, Any]:
    return forwarder_config(
        {"r53": [r53.addr]},
        zones=[{"match": "example.com", "records": records},
               {"match": "other.test", "records": OTHER},
               {"match": "amazonaws.com", "upstream": "r53", "policy": "private-only"}],
        policies={"private-only": {}}, **extra)


async def ask(srv: Any, transport: str, name: str, qtype: str = "A") -> dns.message.Message:
    return await query(srv, transport, name, qtype, use_edns=0)


def chain(msg: dns.message.Message) -> list[str]:
    """The answer records in order (the addresses of one RRset sorted)."""
    return [f"{rrset.name.to_text(True)} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
            for rrset in msg.answer for rd in sorted(rd.to_text() for rd in rrset)]


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.code), o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


def asked(upstream: FakeUpstream) -> list[str]:
    return [rx.message.question[0].name.to_text(True) for rx in upstream.received
            if rx.message is not None]


async def test_a_privatelink_alias_gets_the_endpoints_addresses(
        r53: FakeUpstream, transport: str) -> None:
    """Ask A saas.example.com (local CNAME to the endpoint's DNS name): the CNAME, then the
    ENI addresses the inbound endpoint gives the target, judged by its rule's policy."""
    async with running(setup(r53)) as srv:
        got = await ask(srv, transport, "SaaS.Example.com")
    assert got.rcode() == dns.rcode.NOERROR and ede(got) == []
    assert chain(got) == [f"saas.example.com CNAME {VPCE}.", f"{VPCE} A 10.0.5.10",
                          f"{VPCE} A 10.0.6.10"]
    assert got.question[0].name.to_text() == "SaaS.Example.com."
    assert not got.flags & dns.flags.AA
    assert asked(r53) == [VPCE]


@pytest.mark.parametrize(("qtype", "last"), [("AAAA", f"{VPCE} AAAA fd00:5::10"),
                                             ("HTTPS", f"{VPCE} HTTPS 1 . alpn=\"h2\" "
                                                       "ipv4hint=\"10.0.5.10\"")])
async def test_other_types_follow_the_same_chain(r53: FakeUpstream, qtype: str,
                                                 last: str) -> None:
    async with running(setup(r53)) as srv:
        got = await ask(srv, "udp", "portal.example.com", qtype)
    assert chain(got) == ["portal.example.com CNAME saas.example.com.",
                          f"saas.example.com CNAME {VPCE}.", last]


async def test_a_public_target_is_judged_by_the_policy_of_its_rule(
        r53: FakeUpstream, transport: str) -> None:
    """The target's rule has policy private-only: a public answer for it is blocked, and
    the client gets that verdict (SERVFAIL, EDE 15 naming the target), counted under the
    target's rule."""
    labels = {"policy": "private-only", "rule": "amazonaws.com", "action": "servfail",
              "mode": "enforce", "where": "qname"}
    before = metrics.REGISTRY.get_sample_value("forwarder_policy_verdicts_total", labels) or 0
    async with running(setup(r53)) as srv:
        got = await ask(srv, transport, "leaky.example.com")
    assert got.rcode() == dns.rcode.SERVFAIL and got.answer == []
    ((code, text),) = ede(got)
    assert code == 15
    assert text.startswith(f"public address 52.219.150.28 for {BAD} from group r53 violates "
                           "policy private-only")
    after = metrics.REGISTRY.get_sample_value("forwarder_policy_verdicts_total", labels)
    assert after == before + 1


async def test_a_target_that_does_not_exist_is_nxdomain_with_the_chain(
        r53: FakeUpstream) -> None:
    soa = "amazonaws.com. SOA ns.amazonaws.com. hostmaster.amazonaws.com. 1 7200 900 1209600 60"
    r53.handler = lambda rx: reply(rx.message, rcode=dns.rcode.NXDOMAIN, authority=[soa])
    async with running(setup(r53)) as srv:
        got = await ask(srv, "udp", "gone.example.com")
    assert got.rcode() == dns.rcode.NXDOMAIN
    assert chain(got) == [f"gone.example.com CNAME gone.{VPCE}."]
    assert [rrset.rdtype for rrset in got.authority] == [dns.rdatatype.SOA]


async def test_an_upstream_failure_for_the_target_is_servfail_with_its_ede(
        r53: FakeUpstream) -> None:
    r53.handler = lambda rx: None  # silence
    async with running(setup(r53)) as srv:
        got = await ask(srv, "udp", "saas.example.com")
    assert got.rcode() == dns.rcode.SERVFAIL and got.answer == []
    ((code, text),) = ede(got)
    assert code == 22 and "no upstream in group r53 answered" in text


async def test_a_target_in_another_local_zone_is_answered_from_it(r53: FakeUpstream) -> None:
    async with running(setup(r53)) as srv:
        got = await ask(srv, "udp", "other.example.com")
    assert chain(got) == ["other.example.com CNAME host.other.test.", "host.other.test A 10.0.9.9"]
    assert r53.received == []


async def test_a_loop_between_local_zones_is_servfail_naming_it(r53: FakeUpstream,
                                                                 transport: str) -> None:
    async with running(setup(r53)) as srv:
        got = await ask(srv, transport, "loop.example.com")
    assert got.rcode() == dns.rcode.SERVFAIL and got.answer == []
    assert ede(got) == [(0, "CNAME loop: loop.example.com -> loop.other.test -> "
                            "loop.example.com")]


async def test_a_chain_longer_than_the_limit_is_servfail(r53: FakeUpstream) -> None:
    """CNAMEs that hop between two local zones, more than MAX_HOPS of them."""
    n = chase.MAX_HOPS + 1
    ours = [{"name": f"h{i}.example.com", "type": "CNAME", "value": f"h{i + 1}.other.test"}
            for i in range(0, n, 2)]
    theirs = [{"name": f"h{i}.other.test", "type": "CNAME", "value": f"h{i + 1}.example.com"}
              for i in range(1, n, 2)]
    cfg = setup(r53, ours)
    cfg["zones"][1]["records"] = [*theirs, {"name": f"h{n}.other.test", "type": "A",
                                            "value": "10.0.0.1"}]
    async with running(cfg) as srv:
        got = await ask(srv, "udp", "h0.example.com")
    assert got.rcode() == dns.rcode.SERVFAIL
    ((code, text),) = ede(got)
    assert code == 0
    assert text == (f"CNAME chain from h0.example.com longer than {chase.MAX_HOPS}: "
                    f"h0.example.com -> h1.other.test -> h2.example.com -> ... -> h{n}.other.test")


async def test_a_target_no_rule_routes_is_answered_by_the_cname_alone(
        r53: FakeUpstream) -> None:
    async with running(setup(r53)) as srv:
        got = await ask(srv, "udp", "nowhere.example.com")
    assert got.rcode() == dns.rcode.NOERROR
    assert chain(got) == ["nowhere.example.com CNAME www.unrouted.invalid."]


async def test_the_targets_answer_is_cached_under_its_own_rule(r53: FakeUpstream) -> None:
    async with running(setup(r53)) as srv:
        for name in ("saas.example.com", "portal.example.com", VPCE):
            got = await ask(srv, "udp", name)
            assert sorted(rd.to_text() for rd in got.answer[-1]) == ["10.0.5.10", "10.0.6.10"]
    assert asked(r53) == [VPCE]


async def test_hooks_see_the_whole_answer(tmp_path: Path, r53: FakeUpstream) -> None:
    """With hooks the query takes the task path: on_response gets the followed chain."""
    hook = tmp_path / "seen.py"
    hook.write_text("SEEN = []\n"
                    "def on_response(ctx, reply):\n"
                    "    SEEN.append([r.value for r in reply.answer])\n")
    async with running(setup(r53, hooks=[{"path": str(hook)}])) as srv:
        got = await ask(srv, "tcp", "saas.example.com")
        seen = srv.runtime.hooks.hooks[0].module.SEEN
    assert chain(got)[-1] == f"{VPCE} A 10.0.6.10"
    assert [sorted(values) for values in seen] == [sorted([VPCE, "10.0.5.10", "10.0.6.10"])]


async def test_the_query_log_names_the_group_and_the_verdict(tmp_path: Path,
                                                             r53: FakeUpstream) -> None:
    log = tmp_path / "queries.log"
    cfg = setup(r53, querylog={"enabled": True, "path": str(log)})
    async with running(cfg) as srv:
        await ask(srv, "udp", "saas.example.com")
        await ask(srv, "udp", "leaky.example.com")
    good, bad = logged_queries(log)  # the server's stop writes out what is queued
    assert (good["rule"], good["group"], good["verdict"], sorted(good["answers"])) == (
        "example.com", "r53", "pass", ["10.0.5.10", "10.0.6.10"])
    assert (bad["verdict"], bad["action"], bad["rcode"]) == ("violation", "servfail",
                                                             "SERVFAIL")

