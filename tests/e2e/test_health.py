"""Health end to end: active probes with rise/fall, down servers skipped, passive marking,
canaries, and what /healthz and /readyz answer while it all happens.

Probes run every 0.05 s against fake upstreams whose handlers the tests switch between
answering and silence; tests wait on the health service's change event, never on time.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder import metrics
from forwarder.server import Server
from forwarder.upstream import health
from tests.conftest import dump, forwarder_config, http_get, query, running
from tests.fakes import FakeUpstream, Received, answers, default_handler, reply

S3 = "s3.ap-northeast-1.amazonaws.com"
METRICS_ON = {"enabled": True, "listen": "127.0.0.1:0"}


def health_config(*fakes: FakeUpstream, rise: int = 1, fall: int = 1,
                  canary: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    cfg = forwarder_config({"g": [f.addr for f in fakes]}, metrics=METRICS_ON, **extra)
    group = cfg["upstreams"]["g"]
    # a probe timeout well above a loaded machine's loopback RTT: only silence fails it
    group["health_check"] = {"interval": 0.05, "timeout": 0.25, "rise": rise, "fall": fall}
    if canary is not None:
        group["canary"] = canary
    return cfg


def ready(srv: Server) -> bool:
    return health.readiness(srv)[0]


def server_up(srv: Server, fake: FakeUpstream) -> bool:
    return next(s for s in srv.runtime.groups["g"].servers if s.label == fake.addr).healthy


def gauge(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def is_probe(rx: Received) -> bool:
    q = rx.message.question[0]  # type: ignore[union-attr]
    return q.name.to_text() == "." and q.rdtype == dns.rdatatype.NS


def is_canary(rx: Received) -> bool:
    return rx.message is not None and rx.message.question[0].name.to_text() == f"{S3}."


def silent(rx: Received) -> None:
    return None


def probes_follow(pattern: list[bool]):  # type: ignore[no-untyped-def]
    """A handler answering probes in the repeating *pattern* (True: answer, False: SERVFAIL,
    a failure that costs no probe timeout) and every other query with the default answer."""
    turns = itertools.cycle(pattern)

    def handle(rx: Received) -> object:
        if is_probe(rx):
            return default_handler(rx) if next(turns) else probes_fail(rx)
        return default_handler(rx)
    return handle


def probes_fail(rx: Received) -> dns.message.Message | None:
    """SERVFAIL to probes, normal answers to everything else."""
    if is_probe(rx):
        return reply(rx.message, rcode=dns.rcode.SERVFAIL)
    return default_handler(rx)  # type: ignore[return-value]


async def test_readiness_follows_an_upstream_that_dies_and_recovers(
        upstream: FakeUpstream) -> None:
    """Health: the only server stops answering: marked down, /readyz 503 naming the group,
    /healthz still 200; it answers again: up, /readyz 200."""
    async with running(health_config(upstream, rise=2, fall=2)) as srv:
        assert srv.health is not None
        response = await http_get(srv, "/readyz")
        assert response.status == 200
        assert response.json()["groups"]["g"]["servers"] == {upstream.addr: "up"}

        upstream.handler = silent
        await srv.health.wait_until(lambda: not ready(srv))
        response = await http_get(srv, "/readyz")
        assert response.status == 503
        assert response.headers["content-type"] == "application/json"
        report = response.json()
        assert report["ready"] is False and report["listening"] is True
        why = report["groups"]["g"]["failures"][upstream.addr]
        assert why.startswith("no reply within")
        assert report["groups"]["g"] == {
            "ready": False,
            "reason": f"no healthy server: all 1 down ({upstream.addr}: {why})",
            "servers": {upstream.addr: "down"}, "failures": {upstream.addr: why},
            "canary": "none"}
        reason = f"no healthy server: all 1 down ({upstream.addr}: {why})"
        assert report["reason"] == f"group g: {reason}"
        assert gauge("forwarder_upstream_healthy", group="g", server=upstream.addr) == 0
        assert (await http_get(srv, "/healthz")).status == 200

        upstream.handler = default_handler
        await srv.health.wait_until(lambda: ready(srv))
        response = await http_get(srv, "/readyz")
        assert response.status == 200
        assert response.json()["groups"]["g"]["reason"] == "ok"
        assert gauge("forwarder_upstream_healthy", group="g", server=upstream.addr) == 1


async def test_fewer_failures_than_fall_keep_a_server_up(upstream: FakeUpstream) -> None:
    """Health: fall 3, probes fail two in a row then answer, over and over: never down;
    then they all fail: down."""
    upstream.handler = probes_follow([False, False, True])
    async with running(health_config(upstream, fall=3)) as srv:
        await upstream.wait_for(6)  # two rounds: five results in, the sixth in flight
        assert server_up(srv, upstream) and ready(srv)
        upstream.handler = probes_fail
        await srv.health.wait_until(lambda: not server_up(srv, upstream))


async def test_fewer_successes_than_rise_keep_a_server_down(upstream: FakeUpstream) -> None:
    """Health: rise 3, a down server answers two probes in a row then fails, over and over:
    stays down; then it answers them all: up."""
    upstream.handler = probes_fail
    async with running(health_config(upstream, rise=3)) as srv:
        await srv.health.wait_until(lambda: not server_up(srv, upstream))
        seen = len(upstream.received)
        upstream.handler = probes_follow([True, True, False])
        await upstream.wait_for(seen + 6)
        assert not server_up(srv, upstream) and not ready(srv)
        upstream.handler = default_handler
        await srv.health.wait_until(lambda: server_up(srv, upstream))


async def test_a_down_server_gets_no_client_queries(upstream: FakeUpstream,
                                                    upstream2: FakeUpstream) -> None:
    """Selection: the first server is marked down; client queries go to the second only,
    and /readyz stays 200 with the first listed as down."""
    upstream.handler = silent
    async with running(health_config(upstream, upstream2)) as srv:
        await srv.health.wait_until(lambda: not server_up(srv, upstream))
        for i in range(3):
            response = await query(srv, "udp", f"q{i}.example")
            assert response.rcode() == dns.rcode.NOERROR
        report = (await http_get(srv, "/readyz")).json()
    assert [rx for rx in upstream.received if not is_probe(rx)] == []
    assert len([rx for rx in upstream2.received if not is_probe(rx)]) == 3
    assert report["ready"] is True
    assert report["groups"]["g"]["servers"] == {upstream.addr: "down", upstream2.addr: "up"}


async def test_when_every_server_is_down_they_are_still_used(upstream: FakeUpstream,
                                                             upstream2: FakeUpstream) -> None:
    """Selection: both servers SERVFAIL the probe but answer real queries: both down, not
    ready, and a client still gets its answer."""
    upstream.handler = upstream2.handler = probes_fail
    async with running(health_config(upstream, upstream2)) as srv:
        await srv.health.wait_until(
            lambda: not server_up(srv, upstream) and not server_up(srv, upstream2))
        response = await query(srv, "udp", "still.example")
        readyz = await http_get(srv, "/readyz")
    assert response.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in response.answer[0]] == ["192.0.2.1"]
    assert readyz.status == 503
    assert readyz.json()["groups"]["g"]["reason"].startswith("no healthy server: all 2 down")


async def test_passive_timeouts_mark_a_server_down_without_active_checks(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    """Passive: checks off, max_failures 2; the first server times out on two client queries
    and is marked down; the third query goes to the second server first."""
    cfg = forwarder_config({"g": [upstream.addr, upstream2.addr]}, metrics=METRICS_ON)
    cfg["upstreams"]["g"]["health_check"] = {"enabled": False, "max_failures": 2}
    upstream.handler = silent
    async with running(cfg) as srv:
        for i in range(2):
            await query(srv, "udp", f"p{i}.example")
        assert not server_up(srv, upstream)
        await query(srv, "udp", "p2.example")
        report = (await http_get(srv, "/readyz")).json()
    assert len(upstream.received) == 2
    assert report["ready"] is True
    assert report["groups"]["g"]["servers"][upstream.addr] == "down"
    assert gauge("forwarder_upstream_healthy", group="g", server=upstream.addr) == 0


async def test_probes_are_not_counted_as_forwarded_queries(upstream: FakeUpstream) -> None:
    """Metrics: probes count in forwarder_upstream_health_checks_total only; the implicit
    `system` group, used by no rule, is never probed."""
    async with running(health_config(upstream)) as srv:
        labels = {"group": "g", "server": upstream.addr}
        forwarded = gauge("forwarder_upstream_queries_total", **labels, transport="udp")
        await upstream.wait_for(3)
        assert gauge("forwarder_upstream_queries_total", **labels, transport="udp") == forwarded
        assert (gauge("forwarder_upstream_health_checks_total", **labels, result="success")
                or 0) >= 2
        system = srv.runtime.groups["system"]
        assert not system.actively_checked
        for s in system.servers:
            assert gauge("forwarder_upstream_health_checks_total", group="system",
                         server=s.label, result="success") is None


# -- canaries ----------------------------------------------------------------------------------


def canary_answers(*records: str):  # type: ignore[no-untyped-def]
    return answers({(S3, "A"): list(records), (".", "NS"): ["NS a.root-servers.net."]})


async def test_failing_canary_makes_readyz_503_with_the_reason(
        upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    """Canary: the resolver answers the public S3 address (Gateway endpoint): the group is
    not ready, /readyz says what was returned, the gauge is 0 and a warning is logged.
    Then it answers the endpoint's private addresses: ready again."""
    upstream.handler = canary_answers("A 52.219.1.1")
    zones = [{"match": "amazonaws.com", "upstream": "g"}, {"match": ".", "action": "refuse"}]
    cfg = health_config(upstream, canary={"name": S3, "expect": "allowed"}, zones=zones)
    caplog.set_level(logging.WARNING, logger="forwarder")
    async with running(cfg) as srv:
        assert srv.health is not None
        await srv.health.wait_until(lambda: srv.health.canary_status("g")[0] == "failing")
        response = await http_get(srv, "/readyz")
        assert response.status == 503
        group = response.json()["groups"]["g"]
        expected = (f"{S3} A resolved to 52.219.1.1, outside the allowed networks of policy "
                    f"default (from {upstream.addr})")
        assert group["reason"] == f"canary failing: {expected}"
        assert group["canary"] == f"failing: {expected}"
        assert group["servers"] == {upstream.addr: "up"}
        assert gauge("forwarder_upstream_canary_ok", group="g") == 0
        assert f"canary of group g fails: {expected}" in caplog.messages

        upstream.handler = canary_answers("A 10.0.1.15", "A 10.0.2.15")
        await srv.health.wait_until(lambda: ready(srv))
        response = await http_get(srv, "/readyz")
        assert response.status == 200
        assert response.json()["groups"]["g"]["canary"] == "ok"
        assert gauge("forwarder_upstream_canary_ok", group="g") == 1


async def test_group_is_not_ready_before_its_canary_is_checked(upstream: FakeUpstream) -> None:
    """Canary: until the first check answers, /readyz is 503 "canary not checked yet"."""
    def hold_canary(rx: Received) -> object:
        return None if is_canary(rx) else default_handler(rx)

    upstream.handler = hold_canary
    cfg = health_config(upstream, canary={"name": S3})
    cfg["upstreams"]["g"]["timeout"] = 10.0  # the held check stays pending for the test
    async with running(cfg) as srv:
        assert not ready(srv)  # right after start, before the first check was even sent
        seen = 0
        while not any(is_canary(rx) for rx in upstream.received):
            seen = len(await upstream.wait_for(seen + 1))
        response = await http_get(srv, "/readyz")
    assert response.status == 503
    assert response.json()["groups"]["g"]["reason"] == "canary not checked yet"
    assert response.json()["groups"]["g"]["canary"] == "pending"


async def test_canary_is_judged_by_the_policy_of_its_rule(upstream: FakeUpstream) -> None:
    """Canary: no canary policy; the rule forwarding to the group names one whose allowed
    networks include the answer: the canary passes."""
    upstream.handler = canary_answers("A 198.51.100.7")
    zones = [{"match": "amazonaws.com", "upstream": "g", "policy": "lab"}]
    cfg = health_config(upstream, canary={"name": S3}, zones=zones,
                        policies={"lab": {"allowed": ["198.51.100.0/24"]}})
    async with running(cfg) as srv:
        assert srv.health is not None
        await srv.health.wait_until(lambda: srv.health.canary_status("g")[0] != "pending")
        assert srv.health.canary_status("g")[0] == "ok"
        assert (await http_get(srv, "/readyz")).status == 200


async def test_reload_that_drops_the_canary_makes_the_group_ready(
        upstream: FakeUpstream, tmp_path: Any) -> None:
    """Canary: a failing canary is removed by a reload: ready at once, its gauge is gone."""
    upstream.handler = canary_answers("A 52.219.1.1")
    cfg = health_config(upstream, canary={"name": S3})
    path = tmp_path / "forwarder.yaml"
    async with running(cfg, str(path)) as srv:
        assert srv.health is not None
        await srv.health.wait_until(lambda: srv.health.canary_status("g")[0] == "failing")
        del cfg["upstreams"]["g"]["canary"]
        path.write_text(dump(cfg))
        assert await srv.reload()
        await srv.health.wait_until(lambda: ready(srv))
        assert (await http_get(srv, "/readyz")).json()["groups"]["g"]["canary"] == "none"
    assert gauge("forwarder_upstream_canary_ok", group="g") is None


async def test_rules_without_upstreams_are_ready_once_listening(tmp_path: Any) -> None:
    cfg = {"listen": [{"address": "127.0.0.1", "port": 0}], "metrics": METRICS_ON,
           "zones": [{"match": ".", "records": [
               {"name": "host.example", "type": "A", "value": "10.0.0.1"}]}]}
    async with running(cfg) as srv:
        response = await http_get(srv, "/readyz")
    assert response.status == 200
    assert response.json() == {"ready": True, "listening": True, "reason": "ok", "groups": {}}


async def test_status_line_counts_the_groups_rules_forward_to(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    """The status line (systemd's STATUS=) counts the groups forwarding rules use, once
    each, and how many of them have a server up; a refusing rule adds no group."""
    from forwarder.process.daemon import status_line

    cfg = forwarder_config({"a": [upstream.addr], "b": [upstream2.addr]}, zones=[
        {"match": "a.example", "upstream": "a"}, {"match": "x.a.example", "upstream": "a"},
        {"match": "b.example", "upstream": "b"}, {"match": "blocked.test", "action": "refuse"}])
    async with running(cfg) as srv:
        assert status_line(srv) == "serving 4 rules, 2 of 2 groups healthy"
        srv.runtime.groups["b"].servers[0].set_healthy(False)
        assert status_line(srv) == "serving 4 rules, 1 of 2 groups healthy"
