"""Fuzzing client query handling: mutated client messages (bit flips, byte changes,
insertions, deletions, truncations of real queries, and random bytes) sent to a real
listener over UDP and TCP. Property: every message the forwarder sends back parses with
dnspython, and the server keeps answering (a valid query sent right after each one is
answered).

A few hundred examples run in the default suite; scripts/fuzz.py runs more, for longer.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import dns.edns
import dns.message
import dns.name
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes import Received, reply
from tests.fuzzing import FUZZ_SETTINGS, ServerThread, TimeBox, mutate, mutations


def seeds() -> list[bytes]:
    """Real queries: plain, with EDNS (DO, a big buffer, options), odd names and types."""
    out = []
    for name, qtype, make in [
        ("www.example.com", "A", {}),
        ("s3.ap-northeast-1.amazonaws.com", "AAAA", {"use_edns": 0, "want_dnssec": True}),
        ("a.local.test", "A", {"use_edns": 0, "payload": 4096}),
        ("x.example.com", "HTTPS", {"use_edns": 0, "options": [
            dns.edns.ECSOption("192.0.2.0", 24), dns.edns.GenericOption(10, b"12345678")]}),
        ("blocked.test", "TXT", {}),
        (".", "NS", {"use_edns": 0}),
    ]:
        q = dns.message.make_query(name, qtype, **make)
        out.append(q.to_wire())
    q = dns.message.make_query(dns.name.Name([b"a.b", b"\x00\xff", b"example", b""]), "A")
    q.flags |= 0x10  # CD
    out.append(q.to_wire())
    return out


SEEDS = seeds()
PROBE = dns.message.make_query("a.local.test", "A")


def config(upstream: str) -> dict[str, Any]:
    return {
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": {"up": {"servers": [upstream], "timeout": 0.3, "attempts": 1,
                             "health_check": {"enabled": False}}},
        "zones": [{"match": "local.test",
                   "records": [{"name": "a.local.test", "type": "A", "value": "10.0.0.1"}]},
                  {"match": "blocked.test", "action": "refuse"},
                  {"match": "amazonaws.com", "upstream": "up", "policy": "p"},
                  {"match": ".", "upstream": "up"}],
        "policies": {"p": {"on_violation": "servfail"}},
        "metrics": {"enabled": False},
        "limits": {"tcp_frame_timeout": 1.0},
    }


def plain_answers(rx: Received) -> Any:
    """The fake upstream's handler: NOERROR with no records for anything it can echo (a
    fuzzed question of an odd class or type it cannot, and then sends nothing)."""
    try:
        return reply(rx.message).to_wire() if rx.message is not None else None
    except Exception:
        return None


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(config) as srv:
        assert srv.upstream is not None
        srv.upstream.handler = plain_answers
        yield srv
    print(f"\nfuzz, client side: {udp_box.tried} UDP and {tcp_box.tried} TCP messages tried")


packets = st.one_of(
    st.tuples(st.sampled_from(range(len(SEEDS))), mutations).map(
        lambda t: mutate(SEEDS[t[0]], t[1])),
    st.binary(max_size=600),
)
udp_box, tcp_box = TimeBox(), TimeBox()


def parse(data: bytes) -> dns.message.Message:
    """The property: it parses with dnspython (the failure names the bytes)."""
    try:
        return dns.message.from_wire(data)
    except Exception as e:
        raise AssertionError(f"the forwarder sent what dnspython cannot read ({e!r}): "
                             f"{data.hex()}") from None


def udp_exchange(srv: ServerThread, packet: bytes) -> None:
    """Sends *packet*, then the probe; reads replies until the probe's (each must parse),
    and the fuzzed packet's too when it went to the upstream (forwarded answers are
    always sent)."""
    assert srv.upstream is not None
    asked = len(srv.upstream.received)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.connect(srv.address("udp"))
        sock.send(packet)
        probe = dns.message.make_query("a.local.test", "A")
        sock.send(probe.to_wire())
        got_probe = got_other = False
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            forwarded = len(srv.upstream.received) > asked
            if got_probe and (got_other or not forwarded):
                return
            try:
                reply = parse(sock.recv(65535))
            except TimeoutError:
                break
            if reply.id == probe.id and reply.question == probe.question:
                got_probe = True
            else:
                got_other = True  # the fuzzed packet's answer
        assert got_probe, "the server stopped answering over UDP"


def tcp_exchange(srv: ServerThread, packet: bytes) -> None:
    """Sends *packet* in a frame and then the probe's frame on one connection; every frame
    back must parse, and the probe must be answered unless the server closed the
    connection on the fuzzed frame (then a new connection must be served)."""
    packet = packet[:65535]
    probe = dns.message.make_query("a.local.test", "A")
    with socket.create_connection(srv.address("tcp"), timeout=3.0) as sock:
        wire = probe.to_wire()
        sock.sendall(struct.pack("!H", len(packet)) + packet + struct.pack("!H", len(wire))
                     + wire)
        stream = b""
        while True:
            try:
                chunk = sock.recv(65535)
            except (ConnectionResetError, TimeoutError):
                chunk = b""
            if not chunk:
                break
            stream += chunk
            while len(stream) >= 2 and len(stream) >= 2 + struct.unpack("!H", stream[:2])[0]:
                length = struct.unpack("!H", stream[:2])[0]
                reply = parse(stream[2 : 2 + length])
                stream = stream[2 + length :]
                if reply.id == probe.id and reply.question == probe.question:
                    return
    # closed without answering the probe (a zero-length frame): a fresh connection works
    with socket.create_connection(srv.address("tcp"), timeout=3.0) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        length = struct.unpack("!H", sock.recv(2))[0]
        assert parse(sock.recv(length)).id == probe.id


@FUZZ_SETTINGS
@given(packet=packets)
def test_mutated_queries_get_readable_answers_over_udp(server: ServerThread,
                                                       packet: bytes) -> None:
    """Fuzz, client side, UDP: whatever a client sends, each reply parses with dnspython
    and the server keeps answering."""
    if udp_box.over():
        return
    udp_exchange(server, packet)


@FUZZ_SETTINGS
@given(packet=packets)
def test_mutated_queries_get_readable_answers_over_tcp(server: ServerThread,
                                                       packet: bytes) -> None:
    """Fuzz, client side, TCP: the same, one connection per message."""
    if tcp_box.over():
        return
    tcp_exchange(server, packet)
