"""Tests for forwarder.hooks, the API hook files use: verdict checks, Context, Response."""

from __future__ import annotations

import dataclasses
import typing

import dns.message
import pytest

from forwarder import hooks
from forwarder.config import from_data
from forwarder.dns import message, netsets
from forwarder.hooks import Answer, Block, Context, Continue, Drop, Record, Refuse, Replace, Reroute
from forwarder.query import Query, Reply
from forwarder.stages.router import Router


def make_query(name: str = "Host.Example.com", qtype: str = "AAAA", transport: str = "tcp",
               client: tuple[str, int] = ("10.20.1.2", 40000)) -> Query:
    m = dns.message.make_query(name, qtype, use_edns=0, want_dnssec=True)
    return Query.from_wire(m.to_wire(), client, transport, 0.0)


def routed(q: Query) -> Query:
    cfg = from_data({
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"corp": {"servers": ["127.0.0.1:5399"]},
                      "aws": {"servers": ["127.0.0.1:5398"]}},
        "zones": [{"match": ".", "upstream": "corp"},
                  {"match": "example.com", "upstream": "aws", "name": "example"},
                  {"match": "local.test", "records": [
                      {"name": "local.test", "type": "A", "value": "10.0.0.1"}]}],
        "metrics": {"enabled": False},
    })
    q.rule = Router(cfg.rules).route(q.qname, q.qtype, q.client[0])
    return q


# --- verdicts ------------------------------------------------------------------------------


def test_answer_normalises_records_rcode_and_ede() -> None:
    a = Answer([("x.example", "a", 60, "10.0.0.1")], rcode="nxdomain", ede="why")
    assert a.records == (Record("x.example", "A", 60, "10.0.0.1"),)
    assert a.rcode == 3
    assert a.ede == (0, "why")
    assert Answer().records == () and Answer().rcode == 0 and Answer().ede is None
    assert Answer(ede=(15, "blocked")).ede == (15, "blocked")


@pytest.mark.parametrize("make", [
    lambda: Answer([("x.example", "A", 60, "not-an-address")]),
    lambda: Answer(Record("x.example", "A", 60, "10.0.0.1")),  # one record, not a list
    lambda: Answer("x.example A 60 10.0.0.1"),
    lambda: Answer(rcode="MAYBE"),
    lambda: Answer(ede=(15,)),
    lambda: Answer(ede=("15", "text")),
    lambda: Reroute(""),
    lambda: Reroute(None),  # type: ignore[arg-type]
    lambda: Refuse(15),  # type: ignore[arg-type]
    lambda: Block("explode", "x"),
    lambda: Block("refuse", 3),  # type: ignore[arg-type]
    lambda: Replace([("x", "A", 60, "::1")]),
    lambda: Replace(rcode=-3),
])
def test_bad_verdict_arguments_raise_where_they_are_made(make: typing.Callable[[], object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        make()


def test_block_actions_and_their_rcodes() -> None:
    assert [Block(a).rcode for a in ("servfail", "REFUSE", "nxdomain", "nodata")] == [2, 5, 3, 0]
    assert Block("REFUSE").action == "refuse"


def test_verdicts_are_immutable_values() -> None:
    v = Reroute("corp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.group = "aws"  # type: ignore[misc]
    assert Reroute("corp") == v
    assert Continue() == Continue() and Drop() == Drop()
    assert Answer([("a.b", "A", 1, "10.0.0.1")]) == Answer([Record("a.b", "A", 1, "10.0.0.1")])


def test_verdict_unions_name_the_closed_sets() -> None:
    assert set(typing.get_args(hooks.QueryVerdict)) == {
        Continue, Answer, Reroute, Refuse, Drop, type(None)}
    assert set(typing.get_args(hooks.ResponseVerdict)) == {
        Continue, Replace, Block, Drop, type(None)}


# --- Context ---------------------------------------------------------------------------------


def test_context_gives_the_query_facts() -> None:
    q = routed(make_query("Host.Example.com", "AAAA", "tcp", ("10.20.1.2", 40000)))
    ctx = Context(q, "tagging", {"k": 1})
    assert (ctx.client, ctx.client_port, ctx.protocol) == ("10.20.1.2", 40000, "tcp")
    assert (ctx.qname, ctx.qtype, ctx.dnssec_ok) == ("host.example.com", "AAAA", True)
    assert (ctx.rule, ctx.group) == ("example", "aws")
    assert ctx.options == {"k": 1} and ctx.hook == "tagging"
    q.group = "corp"  # a Reroute
    assert ctx.group == "corp"


def test_context_group_is_none_when_the_rule_does_not_forward() -> None:
    assert Context(routed(make_query("local.test", "A")), "h", {}).group is None
    unrouted = make_query("x.test")
    assert Context(unrouted, "h", {}).rule is None
    assert Context(unrouted, "h", {}).group is None


def test_context_is_read_only() -> None:
    ctx = Context(routed(make_query()), "h", {})
    with pytest.raises(AttributeError):
        ctx.qname = "other.example"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ctx.anything = 1  # type: ignore[attr-defined]


def test_tags_are_set_on_the_query() -> None:
    q = make_query()
    ctx = Context(q, "h", {})
    assert dict(ctx.tags) == {}
    ctx.tag("site", "tokyo")
    ctx.tag("answers", 3)
    assert q.tags == {"site": "tokyo", "answers": "3"}
    assert dict(Context(q, "other", {}).tags) == {"site": "tokyo", "answers": "3"}
    with pytest.raises(TypeError):
        ctx.tag("", "x")


def test_context_helpers() -> None:
    ctx = Context(make_query(), "h", {})
    assert ctx.in_networks("10.20.1.2", ["10.20.0.0/16"])
    assert ctx.in_networks("10.20.1.2", "10.0.0.0/8")
    assert not ctx.in_networks("192.0.2.1", ("10.0.0.0/8", "fc00::/7"))
    assert ctx.in_networks("fd00::1", hooks.networks("fc00::/7"))
    assert not ctx.in_networks("not an address", ["10.0.0.0/8"])
    with pytest.raises(ValueError):
        ctx.in_networks("10.0.0.1", ["10.0.0.0/99"])
    assert ctx.is_subdomain("A.S3.amazonaws.com.", "amazonaws.com")
    assert not ctx.is_subdomain("notamazonaws.com", "amazonaws.com")
    assert isinstance(hooks.networks("10.0.0.0/8"), netsets.NetworkSet)


# --- Response ------------------------------------------------------------------------------


def test_response_view_reads_records_after_the_fact() -> None:
    q = make_query("svc.example.com", "A")
    data = message.build_answer(q, [
        Record("svc.example.com", "CNAME", 60, "vpce-1.example.com"),
        Record("vpce-1.example.com", "A", 30, "10.0.1.15"),
        Record("vpce-1.example.com", "A", 30, "10.0.2.15"),
    ])
    view = hooks.Response(Reply(data, 0, "upstream", ((3, "stale"),)))
    assert view.rcode == "NOERROR" and view.answered_by == "upstream"
    assert view.ede == ((3, "stale"),)
    assert view.answer[0] == Record("svc.example.com", "CNAME", 60, "vpce-1.example.com")
    assert view.addresses == ("10.0.1.15", "10.0.2.15")
    assert view.authority == () and view.additional == ()
    assert hooks.Response(Reply(data, 3, "cache")).rcode == "NXDOMAIN"
