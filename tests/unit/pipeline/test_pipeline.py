"""The pipeline on its own: what `Pipeline.handle` answers at once and what it hands to a
Resolution, in which order the stages run, the one error boundary, each group's in-flight
budget, and draining. A real Runtime is built from YAML; upstreams are fake servers on
loopback; the Client is a recorder standing where a listener would."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.message
import dns.rcode
import pytest

from forwarder import config as config_mod
from forwarder import metrics, runtime
from forwarder.pipeline import Pipeline
from forwarder.query import DROP, Query, Reply
from tests.conftest import forwarder_config
from tests.fakes import FakeUpstream, Received, reply


class Recorder:
    """A Client: what the pipeline answered later, and an event per reply."""

    def __init__(self) -> None:
        self.replies: list[tuple[Query, Reply | None]] = []
        self.arrived = asyncio.Event()

    def reply(self, q: Query, reply: Reply | None) -> None:
        self.replies.append((q, reply))
        self.arrived.set()

    async def next(self) -> Reply | None:
        await asyncio.wait_for(self.arrived.wait(), 5)
        self.arrived.clear()
        return self.replies[-1][1]


def pipeline_for(cfg: dict[str, Any]) -> Pipeline:
    return Pipeline(runtime.RuntimeHolder(runtime.build(config_mod.from_data(cfg, "<test>"))))


def query(name: str, qtype: str = "A", client: str = "127.0.0.1", **kw: Any) -> Query:
    msg = dns.message.make_query(name, qtype, **kw)
    return Query.from_wire(msg.to_wire(), (client, 40000), "udp", 0.0)


def seen(q: Query, reply: Reply) -> dns.message.Message:
    return dns.message.from_wire(reply.to_client(q))


@pytest.mark.parametrize(("cfg_extra", "name", "client", "kw", "rcode", "by"), [
    ({"acl": {"allow": ["10.0.0.0/8"]}}, "www.example.com", "127.0.0.1", {},
     dns.rcode.REFUSED, "acl"),
    ({}, "www.example.com", "127.0.0.1", {"use_edns": 1}, dns.rcode.BADVERS, "edns"),
    ({"zones": [{"match": "corp.example", "upstream": "up"}]}, "www.example.com",
     "127.0.0.1", {}, dns.rcode.REFUSED, "router"),
    ({"zones": [{"match": ".", "action": "refuse"}]}, "www.example.com", "127.0.0.1", {},
     dns.rcode.REFUSED, "router"),
    ({"zones": [{"match": "example.com", "records": [
        {"name": "www.example.com", "type": "A", "value": "10.0.0.7"}]}]},
     "www.example.com", "127.0.0.1", {}, dns.rcode.NOERROR, "local"),
])
async def test_synchronous_stages_answer_without_a_resolution(
        upstream: FakeUpstream, cfg_extra: dict[str, Any], name: str, client: str,
        kw: dict[str, Any], rcode: int, by: str) -> None:
    """The ACL, the EDNS version, the router and local records answer at once: `handle`
    returns the reply, nothing is in flight, the client is never called back and no
    upstream is asked."""
    pipeline = pipeline_for(forwarder_config({"up": [upstream.addr]}, **cfg_extra))
    recorder = Recorder()
    q = query(name, client=client, **kw)
    out = pipeline.handle(q, recorder)
    assert out is not None and out.answered_by == by
    assert seen(q, out).rcode() == rcode
    assert pipeline.inflight == 0 and not recorder.replies and not upstream.received


async def test_a_miss_goes_on_and_the_client_gets_exactly_one_reply(
        upstream: FakeUpstream) -> None:
    """A cache miss: `handle` answers None; the client gets the upstream's answer once;
    the same question again is a cache hit answered at once."""
    pipeline = pipeline_for(forwarder_config({"up": [upstream.addr]}))
    recorder = Recorder()
    q = query("www.example.com")
    assert pipeline.handle(q, recorder) is None
    assert pipeline.inflight == 1
    got = await recorder.next()
    assert got is not None and got.answered_by == "upstream" and got.server == upstream.addr
    assert seen(q, got).answer[0][0].address == "192.0.2.1"
    await pipeline.drain()
    assert pipeline.inflight == 0 and len(recorder.replies) == 1
    hit = pipeline.handle(query("www.example.com"), recorder)
    assert hit is not None and hit.answered_by == "cache"
    assert len(upstream.received) == 1


async def test_the_rate_limit_runs_before_the_acl(upstream: FakeUpstream) -> None:
    """A client the ACL refuses still spends its tokens: past its burst it gets nothing
    at all (DROP), not a REFUSED to reflect."""
    cfg = forwarder_config({"up": [upstream.addr]}, acl={"allow": ["10.0.0.0/8"]},
                           rate_limit={"qps": 1, "burst": 2})
    pipeline = pipeline_for(cfg)
    out = [pipeline.handle(query("a.example.com"), Recorder()) for _ in range(3)]
    assert [r.answered_by if r is not DROP else "drop" for r in out] == ["acl", "acl", "drop"]


async def test_a_bug_in_a_stage_is_the_one_error_boundary_s_servfail(
        upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage raising after the query went on: the client gets SERVFAIL with EDE 0
    "internal error", the error is counted, and nothing stays in flight."""
    pipeline = pipeline_for(forwarder_config(
        {"up": [upstream.addr]}, zones=[{"match": ".", "upstream": "up", "policy": "p"}],
        policies={"p": {}}))
    rt = pipeline.holder.current

    def broken(*_args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(rt.policies["p"], "decide", broken)
    before = metrics.REGISTRY.get_sample_value("forwarder_internal_errors_total") or 0.0
    recorder = Recorder()
    q = query("s3.amazonaws.com")
    assert pipeline.handle(q, recorder) is None
    got = await recorder.next()
    assert got is not None and seen(q, got).rcode() == dns.rcode.SERVFAIL
    assert got.ede == ((0, "internal error"),)
    assert metrics.REGISTRY.get_sample_value("forwarder_internal_errors_total") == before + 1
    await pipeline.drain()
    assert pipeline.inflight == 0


async def test_a_group_s_budget_bounds_it_alone(upstream: FakeUpstream,
                                               upstream2: FakeUpstream) -> None:
    """With `max_inflight: 2` on a group whose server never answers, its third query gets
    SERVFAIL at once ("forwarder overloaded"), while a query routed to another group is
    answered: one dead group cannot take another's place."""
    upstream.handler = lambda rx: None  # black-holed
    cfg = forwarder_config({"dead": [upstream.addr], "live": [upstream2.addr]},
                           zones=[{"match": "dead.example", "upstream": "dead"},
                                  {"match": ".", "upstream": "live"}])
    cfg["upstreams"]["dead"].update(max_inflight=2, timeout=0.5, attempts=1)
    pipeline = pipeline_for(cfg)
    waiting = [Recorder() for _ in range(3)]
    for i, recorder in enumerate(waiting):
        assert pipeline.handle(query(f"n{i}.dead.example"), recorder) is None
    overloaded = await waiting[2].next()
    assert overloaded is not None and overloaded.rcode == dns.rcode.SERVFAIL
    assert "forwarder overloaded: 2 queries in flight to upstream group dead" in \
        overloaded.ede[0][1]
    live = Recorder()
    assert pipeline.handle(query("www.example.com"), live) is None
    answered = await live.next()
    assert answered is not None and answered.rcode == dns.rcode.NOERROR
    groups = pipeline.holder.current.groups
    assert (groups["dead"].load, groups["live"].load) == (2, 0)
    for recorder in waiting[:2]:  # the two in flight time out; their places come back
        timed_out = await recorder.next()
        assert timed_out is not None and timed_out.rcode == dns.rcode.SERVFAIL
    await pipeline.drain()
    assert groups["dead"].load == 0


async def test_drain_waits_for_the_queries_in_flight(upstream: FakeUpstream) -> None:
    """`drain` returns once every query handed over has had its reply."""
    release = asyncio.Event()

    async def held(rx: Received) -> dns.message.Message:
        await release.wait()
        return reply(rx.message, "A 192.0.2.9")

    upstream.handler = held
    cfg = forwarder_config({"up": [upstream.addr]})
    cfg["upstreams"]["up"].update(timeout=5)
    pipeline = pipeline_for(cfg)
    recorder = Recorder()
    assert pipeline.handle(query("www.example.com"), recorder) is None
    drained = asyncio.ensure_future(pipeline.drain())
    await asyncio.sleep(0)
    assert not drained.done()
    release.set()
    await asyncio.wait_for(drained, 5)
    assert len(recorder.replies) == 1 and pipeline.inflight == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def expired_answers(pipeline: Pipeline, names: list[str], clock: Clock) -> None:
    """Caches an answer for each of *names*, then lets them all expire."""
    for name in names:
        recorder = Recorder()
        assert pipeline.handle(query(name), recorder) is None
        assert (await recorder.next()).rcode == dns.rcode.NOERROR  # type: ignore[union-attr]
    clock.now += 400  # past the TTL (300), within max_stale


def dead_group_pipeline(upstream: FakeUpstream) -> tuple[Pipeline, Clock]:
    cfg = forwarder_config({"up": [upstream.addr]},
                           cache={"stale_client_timeout": 0.05})
    cfg["upstreams"]["up"].update(max_inflight=2, timeout=0.5, attempts=1)
    pipeline = pipeline_for(cfg)
    clock = Clock()
    pipeline.holder.current.cache.clock = clock  # type: ignore[union-attr]
    return pipeline, clock


async def test_an_outage_past_the_budget_still_gets_stale_answers(
        upstream: FakeUpstream) -> None:
    """Ten expired names asked at once while the upstream is dead and the group's budget
    is 2: all ten get the expired answer (EDE 3), none "forwarder overloaded"."""
    pipeline, clock = dead_group_pipeline(upstream)
    names = [f"n{i}.example.com" for i in range(10)]
    await expired_answers(pipeline, names, clock)
    upstream.handler = lambda rx: None
    recorders = [Recorder() for _ in names]
    for name, recorder in zip(names, recorders, strict=True):
        assert pipeline.handle(query(name), recorder) is None
    got = [await recorder.next() for recorder in recorders]
    assert all(r is not None and r.answered_by == "stale" for r in got)
    assert all(r.ede[-1][0] == 3 for r in got)  # type: ignore[union-attr]
    await pipeline.holder.current.cache.flights.wait_idle()  # type: ignore[union-attr]


async def test_background_refreshes_count_in_the_group_budget(
        upstream: FakeUpstream) -> None:
    """Expired names asked one after another while the upstream is dead: each client gets
    the stale answer after stale_client_timeout while a refresh goes on in the
    background. Those refreshes keep their places in the group's budget (2), so no more
    than two are ever sent: the other names are answered stale without one."""
    pipeline, clock = dead_group_pipeline(upstream)
    names = [f"n{i}.example.com" for i in range(10)]
    await expired_answers(pipeline, names, clock)
    asked_before = len(upstream.received)
    upstream.handler = lambda rx: None
    group = pipeline.holder.current.groups["up"]
    loads = []
    for name in names:
        recorder = Recorder()
        assert pipeline.handle(query(name), recorder) is None
        got = await recorder.next()
        assert got is not None and got.answered_by == "stale"
        loads.append(group.load)
    assert max(loads) == 2
    assert len(upstream.received) - asked_before == 2
    await pipeline.holder.current.cache.flights.wait_idle()  # type: ignore[union-attr]
    assert group.load == 0
