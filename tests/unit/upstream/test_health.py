"""Upstream health: one probe, one canary check, passive marking, and down-server selection.

Fake upstreams on loopback play the servers; groups are built straight from the model.
"""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import config as config_mod
from forwarder.config import model
from forwarder.dns import names, netsets, wire
from forwarder.errors import UpstreamError
from forwarder.server import Server
from forwarder.upstream import health
from forwarder.upstream.group import Group, ServerState
from tests.conftest import forwarder_config
from tests.fakes import FakeUpstream, Received, answers, reply

S3 = "s3.ap-northeast-1.amazonaws.com"


def server_of(fake: FakeUpstream) -> model.Server:
    return model.Server(fake.host, fake.port)


def make_group(*fakes: FakeUpstream, attempts: int = 1, max_failures: int = 2,
               health_enabled: bool = True, canary: model.Canary | None = None) -> Group:
    cfg = model.UpstreamGroup(
        "g", tuple(server_of(f) for f in fakes), timeout=0.1, attempts=attempts, budget=2.0,
        health=model.HealthCheck(enabled=health_enabled, max_failures=max_failures),
        canary=canary)
    return Group(cfg)


def silent(rx: Received) -> None:
    return None


def rcode_handler(rcode: int):  # type: ignore[no-untyped-def]
    def handle(rx: Received) -> dns.message.Message:
        return reply(rx.message, rcode=rcode)
    return handle


def malformed(rx: Received) -> bytes:
    """A reply that matches the query (ID, question) but whose answer record is cut short."""
    assert rx.message is not None
    question_len = len(rx.message.question[0].name.to_wire()) + 4
    head = rx.wire[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"
    return head + rx.wire[12 : 12 + question_len] + b"\xc0"


# -- probe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_probe_sends_the_configured_question_and_accepts_an_answer(
        upstream: FakeUpstream, transport: str) -> None:
    """Probe: `. NS` by default, RD set, over the group's transport; any answer passes."""
    state = ServerState("g", server_of(upstream))
    assert await health.probe(state, transport, model.HealthCheck(timeout=1.0)) is None
    (rx,) = upstream.received
    assert rx.transport == transport
    assert rx.message is not None
    q = rx.message.question[0]
    assert (q.name.to_text(), q.rdtype) == (".", dns.rdatatype.NS)
    assert rx.message.flags & dns.flags.RD


async def test_probe_asks_a_configured_name_and_type(upstream: FakeUpstream) -> None:
    state = ServerState("g", server_of(upstream))
    check = model.HealthCheck(name="amazonaws.com", qtype=wire.QTYPES["SOA"], timeout=1.0)
    assert await health.probe(state, "udp", check) is None
    q = upstream.received[0].message.question[0]  # type: ignore[union-attr]
    assert (q.name.to_text(), q.rdtype) == ("amazonaws.com.", dns.rdatatype.SOA)


@pytest.mark.parametrize(("rcode", "expected"), [
    (dns.rcode.NXDOMAIN, None),  # an answer, even a negative one, shows the server works
    (dns.rcode.SERVFAIL, "answered SERVFAIL"),
    (dns.rcode.REFUSED, "answered REFUSED"),
])
async def test_probe_judges_the_rcode(upstream: FakeUpstream, rcode: int,
                                      expected: str | None) -> None:
    upstream.handler = rcode_handler(rcode)
    state = ServerState("g", server_of(upstream))
    assert await health.probe(state, "udp", model.HealthCheck(timeout=1.0)) == expected


async def test_probe_without_reply_reports_the_timeout(upstream: FakeUpstream) -> None:
    upstream.handler = silent
    state = ServerState("g", server_of(upstream))
    assert await health.probe(state, "udp", model.HealthCheck(timeout=0.05)) == \
        "no reply within 0.05s"


async def test_probe_of_a_closed_tcp_port_reports_the_network_error(
        upstream: FakeUpstream) -> None:
    port = upstream.port
    await upstream.stop()
    state = ServerState("g", model.Server("127.0.0.1", port))
    problem = await health.probe(state, "tcp", model.HealthCheck(timeout=1.0))
    assert problem == "Connection refused"


# -- canary ------------------------------------------------------------------------------------


async def test_canary_with_private_addresses_passes(upstream: FakeUpstream) -> None:
    upstream.handler = answers({(S3, "A"): ["A 10.0.1.15", "A 10.0.2.15"]})
    canary = model.Canary(S3)
    passed, detail = await health.check_canary(make_group(upstream), canary, "default",
                                               health.DEFAULT_ALLOWED)
    assert passed
    assert detail.startswith(f"{S3} A resolved to 10.0.")
    assert "10.0.1.15" in detail and "10.0.2.15" in detail


async def test_canary_with_a_public_address_fails_and_says_which(upstream: FakeUpstream) -> None:
    """Canary: a Gateway endpoint answers the public S3 address; the detail names it."""
    upstream.handler = answers({(S3, "A"): ["A 10.0.1.15", "A 52.219.1.1"]})
    passed, detail = await health.check_canary(
        make_group(upstream), model.Canary(S3), "private-only", health.DEFAULT_ALLOWED)
    assert not passed
    assert "resolved to 52.219.1.1, outside the allowed networks of policy private-only" in detail
    assert "whole answer: " in detail and "10.0.1.15" in detail
    assert upstream.addr in detail


async def test_canary_follows_cnames_to_the_addresses(upstream: FakeUpstream) -> None:
    upstream.handler = answers({(S3, "A"): [
        f"{S3}. CNAME s3-r-w.ap-northeast-1.amazonaws.com.",
        "s3-r-w.ap-northeast-1.amazonaws.com. A 52.219.1.1"]})
    passed, detail = await health.check_canary(
        make_group(upstream), model.Canary(S3), "default", health.DEFAULT_ALLOWED)
    assert not passed and "52.219.1.1" in detail


async def test_canary_judges_against_the_policy_networks(upstream: FakeUpstream) -> None:
    upstream.handler = answers({(S3, "A"): ["A 198.51.100.7"]})
    allowed = netsets.NetworkSet.parse(["198.51.100.0/24"])
    passed, _ = await health.check_canary(make_group(upstream), model.Canary(S3), "p", allowed)
    assert passed


@pytest.mark.parametrize(("answer", "expected"), [
    (dns.rcode.NXDOMAIN, "answered NXDOMAIN"),
    ([], "answered no addresses"),
    (["TXT \"hello\""], "answered no addresses"),
])
async def test_canary_that_does_not_resolve_fails(upstream: FakeUpstream, answer: object,
                                                  expected: str) -> None:
    upstream.handler = answers({(S3, "A"): answer})  # type: ignore[dict-item]
    passed, detail = await health.check_canary(
        make_group(upstream), model.Canary(S3), "default", health.DEFAULT_ALLOWED)
    assert not passed
    assert detail.startswith(f"{S3} A {expected}")


async def test_canary_through_a_dead_group_fails_with_the_group_error(
        upstream: FakeUpstream) -> None:
    upstream.handler = silent
    passed, detail = await health.check_canary(
        make_group(upstream), model.Canary(S3, qtype=28), "default", health.DEFAULT_ALLOWED)
    assert not passed
    assert detail.startswith(f"{S3} AAAA did not resolve: no upstream in group g answered")


def canary_config(**canary: object) -> model.Config:
    cfg = forwarder_config(
        {"r53": ["127.0.0.1:5301"], "corp": ["127.0.0.1:5302"]},
        zones=[{"match": "amazonaws.com", "upstream": "r53", "policy": "strict"},
               {"match": ".", "upstream": "corp"}],
        policies={"strict": {"allowed": ["10.0.0.0/8"]},
                  "lab": {"allowed": ["192.168.0.0/16"]}})
    cfg["upstreams"]["r53"]["canary"] = {"name": S3, **canary}
    cfg["upstreams"]["corp"]["canary"] = {"name": "intranet.example.com"}
    return config_mod.from_data(cfg)


def test_canary_policy_is_its_own_then_the_rules_then_the_default() -> None:
    cfg = canary_config(policy="lab")
    name, allowed = health.canary_allowed(health.canary_policy(cfg, "r53"))
    assert name == "lab" and allowed.contains("192.168.1.1") and not allowed.contains("10.1.1.1")
    name, allowed = health.canary_allowed(health.canary_policy(canary_config(), "r53"))
    assert name == "strict" and allowed.contains("10.1.1.1") and not allowed.contains("192.168.1.1")
    name, allowed = health.canary_allowed(health.canary_policy(cfg, "corp"))
    assert (name, allowed) == ("default", health.DEFAULT_ALLOWED)


def test_groups_in_use_are_rule_targets_and_fallbacks_never_an_unused_system() -> None:
    cfg = config_mod.from_data(forwarder_config(
        {"r53": ["127.0.0.1:5301"], "spare": ["127.0.0.1:5303"], "idle": ["127.0.0.1:5304"]},
        zones=[{"match": "amazonaws.com", "upstream": "r53", "policy": "p"},
               {"match": "example.com", "records": [
                   {"name": "example.com", "type": "A", "value": "10.0.0.1"}]},
               {"match": ".", "action": "refuse"}],
        policies={"p": {"on_violation": "fallback", "fallback": "spare"}}))
    assert health.rule_groups(cfg) == ["r53"]
    assert health.groups_in_use(cfg) == ["r53", "spare"]


# -- passive health (upstream/group.py) ---------------------------------------------------------


async def ask(group: Group, name: str = "example.com") -> wire.Rcode | int:
    qname = names.from_text(name)
    r = await group.ask(wire.question_of(qname, 1, 1), qname, 1, 1)
    return r.rcode


async def test_consecutive_timeouts_mark_a_server_down(upstream: FakeUpstream) -> None:
    """Passive: max_failures timeouts in a row mark the server down; fewer do not."""
    group = make_group(upstream, max_failures=2)
    upstream.handler = silent
    with pytest.raises(UpstreamError):
        await ask(group)
    assert group.servers[0].healthy
    with pytest.raises(UpstreamError):
        await ask(group)
    assert not group.servers[0].healthy


@pytest.mark.parametrize("interruption", ["answer", "servfail"])
async def test_any_reply_ends_a_run_of_timeouts(upstream: FakeUpstream, interruption: str) -> None:
    """Passive: a reply (even SERVFAIL, which fails the query over) resets the count."""
    group = make_group(upstream, max_failures=2)
    upstream.handler = silent
    with pytest.raises(UpstreamError):
        await ask(group)
    upstream.handler = (rcode_handler(dns.rcode.SERVFAIL) if interruption == "servfail"
                        else answers({("example.com", "A"): ["A 192.0.2.1"]}))
    await ask(group)
    upstream.handler = silent
    with pytest.raises(UpstreamError):
        await ask(group)
    assert group.servers[0].healthy
    assert group.servers[0].consecutive_failures == 1


async def test_malformed_replies_do_not_mark_a_server_down(upstream: FakeUpstream) -> None:
    group = make_group(upstream, max_failures=1)
    upstream.handler = malformed
    for _ in range(3):
        with pytest.raises(UpstreamError, match="malformed"):
            await ask(group)
    assert group.servers[0].healthy


async def test_down_server_is_skipped_while_checks_run(upstream: FakeUpstream,
                                                       upstream2: FakeUpstream) -> None:
    """Selection: with active checks, a server marked down gets no queries while another is
    up, even with attempts to spare."""
    group = make_group(upstream, upstream2, attempts=3)
    group.actively_checked = True
    upstream2.handler = silent
    group.servers[0].set_healthy(False)
    with pytest.raises(UpstreamError):
        await ask(group)
    assert len(upstream2.received) == 3
    assert upstream.received == []


async def test_all_servers_down_are_all_still_tried(upstream: FakeUpstream,
                                                    upstream2: FakeUpstream) -> None:
    group = make_group(upstream, upstream2, attempts=2)
    group.actively_checked = True
    upstream.handler = silent
    for s in group.servers:
        s.set_healthy(False)
    assert await ask(group) == wire.Rcode.NOERROR
    assert len(upstream.received) == 1 and len(upstream2.received) == 1


async def test_without_checks_a_down_server_is_tried_last_and_a_reply_brings_it_back(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    group = make_group(upstream, upstream2, attempts=2, health_enabled=False)
    upstream2.handler = silent
    group.servers[0].set_healthy(False)
    assert await ask(group) == wire.Rcode.NOERROR
    assert len(upstream2.received) == 1 and len(upstream.received) == 1
    assert group.servers[0].healthy


# -- readiness ---------------------------------------------------------------------------------


def test_a_server_that_is_not_listening_is_not_ready() -> None:
    srv = Server(config_mod.from_data(forwarder_config({"g": ["127.0.0.1:5301"]})))
    ready, report = health.readiness(srv)
    assert not ready
    assert report["listening"] is False
    assert report["reason"] == "listeners are not bound"
    assert report["groups"]["g"] == {"ready": True, "reason": "ok",
                                     "servers": {"127.0.0.1:5301": "up"}, "canary": "none"}
