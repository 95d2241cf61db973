"""The forwarder behind a real BIND 9 (Debian's bind9), as a corporate DNS server with a
`type forward; forward only;` zone for amazonaws.com: what a client of BIND gets for each
policy action, and where the operator finds what happened (README "Behind another DNS
server"). BIND's root hints point at loopback and every zone is forwarded to the
forwarder, so nothing leaves the machine.

A missing named fails these tests when FORWARDER_REQUIRE_INTEROP is set (CI installs it
in .ci/run); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from forwarder.server import Server
from tests.conftest import forwarder_config, free_port, logged_queries, running
from tests.e2e.test_interop import need, started
from tests.fakes import FakeUpstream, answers

pytestmark = pytest.mark.slow

S3 = "s3.ap-northeast-1.amazonaws.com"
NAMED_CONF = """
options {{
    directory "{directory}";
    pid-file "{directory}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ 127.0.0.0/8; }};
    dnssec-validation no;
    forwarders {{ 127.0.0.1 port {forwarder}; }};
    forward only;
}};
controls {{ }};
zone "." {{ type hint; file "{directory}/root.hint"; }};
zone "amazonaws.com" {{
    type forward;
    forward only;     // never resolve AWS names itself when the forwarder says no
    forwarders {{ 127.0.0.1 port {forwarder}; }};
}};
"""
ROOT_HINT = ". 3600000 NS root.hint.invalid.\nroot.hint.invalid. 3600000 A 127.0.0.1\n"


@contextlib.asynccontextmanager
async def bind_in_front(server: Server, tmp_path: Path) -> AsyncIterator[int]:
    """named on a free loopback port, forwarding to *server*; answers its port."""
    named = need("named")
    port = free_port()
    (tmp_path / "root.hint").write_text(ROOT_HINT)
    conf = tmp_path / "named.conf"
    conf.write_text(NAMED_CONF.format(directory=tmp_path, port=port,
                                      forwarder=server.address("udp")[1]))
    argv = [named, "-g", "-n", "1", "-4", "-c", str(conf)]
    async with started(argv, port, tmp_path / "named.log"):
        yield port


def setup(upstream: FakeUpstream, log: Path, **policy: Any) -> dict[str, Any]:
    return forwarder_config(
        {"vpc": [upstream.addr]},
        zones=[{"match": "amazonaws.com", "upstream": "vpc", "policy": "private-only"},
               {"match": ".", "upstream": "vpc"}],
        policies={"private-only": policy},
        querylog={"enabled": True, "path": str(log)})


async def ask_bind(port: int, name: str = S3) -> dns.message.Message:
    q = dns.message.make_query(name, "A", use_edns=0)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)


def ede(msg: dns.message.Message) -> list[tuple[int, str]]:
    return [(int(o.code), o.text or "") for o in msg.options if o.otype == dns.edns.EDE]


@pytest.fixture
async def vpc() -> Any:
    public = {(S3, "A"): ["A 52.219.150.28"]}
    async with FakeUpstream(answers(public)) as fake:
        yield fake


async def test_a_blocked_answer_reaches_bind_clients_as_servfail_without_the_reason(
        vpc: FakeUpstream, tmp_path: Path) -> None:
    """SERVFAIL with EDE 15 from the forwarder: BIND's client gets SERVFAIL, and not the
    forwarder's EDE text; the forwarder's query log has the violation, with BIND as the
    client."""
    log = tmp_path / "queries.jsonl"
    async with running(setup(vpc, log)) as server, bind_in_front(server, tmp_path) as port:
        got = await ask_bind(port)
    assert got.rcode() == dns.rcode.SERVFAIL and got.answer == []
    assert all(code != 15 for code, _ in ede(got))  # the reason stayed at the forwarder
    lines = [line for line in logged_queries(log) if line["name"] == S3]
    assert lines and all(line["client"] == "127.0.0.1" for line in lines)
    assert {(line["verdict"], line["action"]) for line in lines} == {("violation", "servfail")}
    assert lines[0]["violations"] == ["52.219.150.28"]
    assert lines[0]["ede"][0]["code"] == 15


@pytest.mark.parametrize(("policy", "rcode", "addresses"), [
    ({"on_violation": "nxdomain"}, dns.rcode.NXDOMAIN, []),
    ({"on_violation": "rewrite", "rewrite": {S3: {"A": ["10.0.1.15", "10.0.2.15"]}}},
     dns.rcode.NOERROR, ["10.0.1.15", "10.0.2.15"]),
])
async def test_other_actions_reach_bind_clients_as_answers(
        vpc: FakeUpstream, tmp_path: Path, policy: dict[str, Any], rcode: int,
        addresses: list[str]) -> None:
    """NXDOMAIN (cached by BIND like any) and rewritten private addresses pass through."""
    async with running(setup(vpc, tmp_path / "q.jsonl", **policy)) as server, \
            bind_in_front(server, tmp_path) as port:
        got = await ask_bind(port)
    assert got.rcode() == rcode
    assert sorted(rd.address for rrset in got.answer if rrset.rdtype == dns.rdatatype.A
                  for rd in rrset) == addresses
