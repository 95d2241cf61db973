"""An upstream group on its own: the order it asks its servers in, failing over on
silence, SERVFAIL/REFUSED and malformed replies, retrying a truncated reply over TCP,
the total budget, and why it failed. Servers are fake upstreams on loopback."""

from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import pytest

from forwarder import metrics
from forwarder.config import model
from forwarder.dns import names, wire
from forwarder.errors import UpstreamError
from forwarder.upstream.group import Group
from tests.fakes import FakeUpstream, Received, Truncated, reply

QNAME = names.from_text("www.example.com")
QUESTION = wire.question_of(QNAME, 1, 1)


def group_of(*servers: str, **settings: object) -> Group:
    cfg = model.UpstreamGroup(
        "g", tuple(model.Server(*s.rsplit(":", 1)[:1], int(s.rsplit(":", 1)[1]))
                   for s in servers),
        timeout=settings.pop("timeout", 0.3), attempts=settings.pop("attempts", 2),  # type: ignore[arg-type]
        budget=settings.pop("budget", 2.0), **settings)  # type: ignore[arg-type]
    return Group(cfg)


def closed_port() -> int:
    """A loopback UDP port nothing listens on (ICMP port unreachable answers there)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def errors(kind: str, server: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "forwarder_upstream_errors_total", {"group": "g", "server": server, "kind": kind}) or 0.0


async def ask(group: Group) -> object:
    return await group.ask(QUESTION, QNAME, 1, 1)


async def test_sequential_asks_the_first_server_and_fails_over_on_silence(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    upstream.handler = lambda rx: None
    got = await ask(group_of(upstream.addr, upstream2.addr))
    assert got.server == upstream2.addr and got.answered_by == "upstream"  # type: ignore[attr-defined]
    assert (len(upstream.received), len(upstream2.received)) == (1, 1)


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED])
async def test_servfail_and_refused_fail_over_and_the_last_one_is_passed_on(
        upstream: FakeUpstream, upstream2: FakeUpstream, rcode: int) -> None:
    """The next server is asked; when every server answers so, the last answer is the
    group's (it is an answer, not silence), counted by kind."""
    upstream.handler = upstream2.handler = lambda rx: reply(rx.message, rcode=rcode)
    kind = "servfail" if rcode == dns.rcode.SERVFAIL else "refused"
    before = errors(kind, upstream.addr)
    got = await ask(group_of(upstream.addr, upstream2.addr))
    assert got.rcode == rcode and got.server == upstream2.addr  # type: ignore[attr-defined]
    assert errors(kind, upstream.addr) == before + 1


async def test_a_malformed_reply_is_counted_and_the_next_server_asked(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    """An A record of 3 octets: strict clients cannot read it, so it is never used."""
    def bad(rx: Received) -> bytes:
        q = rx.message
        return (struct.pack("!6H", q.id, 0x8180, 1, 1, 0, 0)
                + q.question[0].name.to_wire() + struct.pack("!HH", 1, 1)
                + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 3) + b"\x0a\x00\x00")

    upstream.handler = bad
    before = errors("malformed", upstream.addr)
    got = await ask(group_of(upstream.addr, upstream2.addr))
    assert got.server == upstream2.addr  # type: ignore[attr-defined]
    assert errors("malformed", upstream.addr) == before + 1


async def test_a_truncated_reply_is_asked_again_over_tcp_of_the_same_server(
        upstream: FakeUpstream) -> None:
    upstream.handler = lambda rx: Truncated()
    got = await ask(group_of(upstream.addr))
    assert [r.transport for r in upstream.received] == ["udp", "tcp"]
    assert got.rcode == 0 and not got.wire[2] & 0x02  # type: ignore[attr-defined]


async def test_every_server_silent_is_no_reachable_authority(upstream: FakeUpstream) -> None:
    """Silence, then the budget spent: EDE 22, the text naming each try."""
    upstream.handler = lambda rx: None
    with pytest.raises(UpstreamError) as failed:
        await ask(group_of(upstream.addr, attempts=2))
    assert failed.value.ede_code == wire.Ede.NO_REACHABLE_AUTHORITY
    assert failed.value.text == (f"no upstream in group g answered: {upstream.addr} timed out; "
                                 f"{upstream.addr} timed out")


async def test_only_network_errors_are_a_network_error() -> None:
    """Every try refused by the network (ICMP port unreachable): EDE 23."""
    port = closed_port()
    with pytest.raises(UpstreamError) as failed:
        await ask(group_of(f"127.0.0.1:{port}", attempts=2))
    assert failed.value.ede_code == wire.Ede.NETWORK_ERROR


async def test_the_budget_ends_the_tries(upstream: FakeUpstream) -> None:
    """Ten tries of 0.3 s but a budget of 0.5 s: two tries, then "budget spent"."""
    upstream.handler = lambda rx: None
    with pytest.raises(UpstreamError) as failed:
        await ask(group_of(upstream.addr, attempts=10, budget=0.5))
    assert len(upstream.received) == 2
    assert failed.value.text.endswith("budget spent")


async def test_round_robin_starts_each_question_at_the_next_server(
        upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    group = group_of(upstream.addr, upstream2.addr, selection=model.Selection.ROUND_ROBIN)
    servers = [(await ask(group)).server for _ in range(4)]  # type: ignore[attr-defined]
    assert servers == [upstream.addr, upstream2.addr, upstream.addr, upstream2.addr]


async def test_a_reply_that_is_not_to_our_question_is_never_taken(
        upstream: FakeUpstream) -> None:
    """A reply with another ID, then the right one: only the right one is used, and the
    stray one is counted as a mismatch."""
    def stray_then_right(rx: Received) -> list[object]:
        wrong = reply(rx.message, "A 203.0.113.66")
        wrong.id = (rx.message.id + 1) % 65536
        return [wrong.to_wire(), reply(rx.message, "A 192.0.2.1")]

    upstream.handler = stray_then_right
    before = errors("mismatch", upstream.addr)
    got = await ask(group_of(upstream.addr))
    answer = dns.message.from_wire(got.wire)  # type: ignore[attr-defined]
    assert answer.answer[0][0].address == "192.0.2.1"
    assert errors("mismatch", upstream.addr) == before + 1
