"""Fuzzing the upstream-reply reader and the answer policy: real upstream replies (A,
CNAME chains into protected names, HTTPS hints, TXT, MX with glue, NXDOMAIN with SOA, an
EDE option) are mutated after their question (bit flips, byte changes, insertions,
deletions, truncations: pointer loops, bad rdlengths and wrong counts among them) and
sometimes in their header counts and flags, then sent by the fake upstream for queries
under rules with and without a policy. Property: the client always gets an answer (SERVFAIL
at worst: the forwarder fails closed), and every message the forwarder sends parses with
dnspython.

A few hundred examples run in the default suite; scripts/fuzz.py runs more, for longer.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Iterator
from typing import Any

import dns.edns
import dns.message
import dns.opcode
import dns.rcode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import query, running
from tests.e2e.test_fuzz_client import parse
from tests.fakes import Received, reply
from tests.fuzzing import FUZZ_SETTINGS, ServerThread, TimeBox, mutate, mutations

NAMES = [("s3.ap-northeast-1.amazonaws.com", "strip"), ("ec2.api.aws", "servfail"),
         ("www.example.com", None)]
QTYPES = ["A", "AAAA", "HTTPS", "TXT", "MX"]


def seed_reply(query: dns.message.Message, kind: int) -> dns.message.Message:
    """One of the real replies the mutations start from, for *query*."""
    name = query.question[0].name.to_text()
    if kind == 0:
        return reply(query, "A 10.0.1.15", "A 52.219.1.1")
    if kind == 1:
        return reply(query, f"{name} CNAME s3.ap-northeast-1.amazonaws.com.",
                     "s3.ap-northeast-1.amazonaws.com. A 52.219.1.2")
    if kind == 2:
        return reply(query, 'HTTPS 1 . alpn="h2,h3" ipv4hint=52.219.1.3 ipv6hint=2600::1')
    if kind == 3:
        return reply(query, 'TXT "v=spf1 -all" "second"', "AAAA 2600:1fa0::1")
    if kind == 4:
        return reply(query, rcode=dns.rcode.NXDOMAIN,
                     authority=["example.com. SOA ns.example.com. host.example.com. "
                                "1 7200 900 1209600 300"])
    r = reply(query, "MX 10 mx.example.com.", additional=["mx.example.com. A 52.219.1.4"])
    r.use_edns(0, options=[dns.edns.EDEOption(15, "blocked upstream")])
    return r


# what the fake upstream sends next: (seed kind, body mutations, header sets)
current: dict[str, Any] = {"kind": 0, "body": [], "header": []}


def question_end(wire: bytes) -> int:
    """Where the (uncompressed) question of the query *wire* ends."""
    off = 12
    while wire[off]:
        off += wire[off] + 1
    return off + 5


def fuzzed(rx: Received) -> bytes | None:
    """The fake upstream's handler: the seed reply, mutated, with the query's ID, QR and
    question kept (so that it is read, not just ignored as someone else's reply)."""
    if rx.message is None:
        return None
    wire = seed_reply(rx.message, current["kind"]).to_wire(max_size=65535)
    qend = question_end(rx.wire)
    body = mutate(wire, current["body"], start=qend) if current["body"] else wire
    header = bytearray(body[:12])
    for index, value in current["header"]:
        header[index] = value
    header[0:2] = rx.wire[0:2]
    header[2] |= 0x80  # QR
    header[4:6] = b"\x00\x01"
    return bytes(header) + rx.wire[12:qend] + body[qend:]


def config(upstream: str) -> dict[str, Any]:
    return {
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"up": {"servers": [upstream], "timeout": 0.1, "attempts": 1,
                             "health_check": {"enabled": False}}},
        "zones": [{"match": "amazonaws.com", "upstream": "up", "policy": "strip"},
                  {"match": "api.aws", "upstream": "up", "policy": "servfail"},
                  {"match": ".", "upstream": "up"}],
        "policies": {"strip": {"on_violation": "strip"},
                     "servfail": {"on_violation": "servfail"}},
        "metrics": {"enabled": False},
    }


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(config) as srv:
        assert srv.upstream is not None
        srv.upstream.handler = fuzzed
        yield srv
    print(f"\nfuzz, upstream side: {box.tried} upstream replies tried")


box = TimeBox()
serial = itertools.count()


@FUZZ_SETTINGS
@given(kind=st.integers(0, 5), body=st.one_of(st.just([]), mutations),
       header=st.lists(st.tuples(st.sampled_from([2, 3, 6, 7, 8, 9, 10, 11]),
                                 st.integers(0, 255)), max_size=2),
       name=st.sampled_from(NAMES), qtype=st.sampled_from(QTYPES),
       transport=st.sampled_from(["udp", "tcp"]))
def test_any_upstream_reply_reaches_the_client_readable(
        server: ServerThread, kind: int, body: list[tuple[int, int, int]],
        header: list[tuple[int, int]], name: tuple[str, str | None], qtype: str,
        transport: str) -> None:
    """Fuzz, upstream side: whatever bytes the upstream sends, the client gets an answer
    that parses with dnspython."""
    if box.over():
        return
    current.update(kind=kind, body=body, header=header)
    q = dns.message.make_query(f"f{next(serial)}.{name[0]}", qtype, use_edns=0)
    wire = q.to_wire()
    host, port = server.address(transport)
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3.0)
            sock.sendto(wire, (host, port))
            data = sock.recv(65535)
    else:
        with socket.create_connection((host, port), timeout=3.0) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = sock.recv(65535)
                assert chunk, "the connection closed without an answer"
                data += chunk
            data = data[2:]
    answer = parse(data)
    assert answer.id == q.id and answer.question == q.question


# --- what fuzzing found ----------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])
async def test_a_reply_with_another_opcode_is_not_relayed(upstream: Any, opcode: int) -> None:
    """Found by fuzzing: an upstream reply with opcode UPDATE (5) was relayed with that
    opcode, and dnspython (reading it as an UPDATE) could not parse it. A reply whose opcode
    is not QUERY is not an answer to our query: the client gets SERVFAIL, as for a reply
    that never came, and what the forwarder sends carries the client's opcode."""
    def other_opcode(rx: Received) -> bytes:
        wire = bytearray(reply(rx.message, "A 192.0.2.1").to_wire())
        wire[2] = (wire[2] & 0x87) | (opcode << 3)
        return bytes(wire)

    upstream.handler = other_opcode
    cfg = config(upstream.addr)
    cfg["upstreams"]["up"]["timeout"] = 0.2
    async with running(cfg) as srv:
        r = await query(srv, "udp", "www.example.com", use_edns=0)
    assert r.rcode() == dns.rcode.SERVFAIL and r.opcode() == dns.opcode.QUERY
