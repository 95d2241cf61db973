"""What the UDP path has also works over DNS over TLS and DNS over HTTPS: selection,
per-try timeout and failover, health checks and the canary over the same transport,
/readyz saying why, the answer policy, the cache, hooks and `forwarder explain`."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype
import pytest

from forwarder import config as config_mod
from forwarder import explain
from forwarder.upstream import health
from tests.conftest import http_get, query, running
from tests.e2e.test_encrypted_upstreams import address, ede_of, secure_config
from tests.fakes import Delay, Received, answers, default_handler
from tests.secure_fakes import FakeDoh, FakeDot, Pki

S3 = "s3.ap-northeast-1.amazonaws.com"
METRICS_ON = {"enabled": True, "listen": "127.0.0.1:0"}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture(params=["tls", "https"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(pki: Pki, transport: str, **kwargs: Any) -> FakeDot | FakeDoh:
    return FakeDot(pki, **kwargs) if transport == "tls" else FakeDoh(pki, **kwargs)


@pytest.fixture
async def pair(pki: Pki, transport: str) -> AsyncIterator[tuple[FakeDot | FakeDoh, ...]]:
    """Two encrypted servers of the transport under test."""
    first, second = make(pki, transport), make(pki, transport)
    async with first, second:
        yield first, second


def is_probe(rx: Received) -> bool:
    q = rx.message.question[0]  # type: ignore[union-attr]
    return q.name.to_text() == "." and q.rdtype == dns.rdatatype.NS


async def test_round_robin_spreads_queries(pki: Pki, transport: str,
                                           pair: tuple[FakeDot | FakeDoh, ...]) -> None:
    """selection: round_robin over two encrypted servers: four queries, two each."""
    cfg = secure_config(pki, transport, [address(f) for f in pair], selection="round_robin")
    cfg["cache"] = {"enabled": False}
    async with running(cfg) as srv:
        for i in range(4):
            assert (await query(srv, "udp", f"rr{i}.example")).rcode() == dns.rcode.NOERROR
    assert [len(f.received) for f in pair] == [2, 2]


async def test_slow_server_times_out_and_the_next_answers(
        pki: Pki, transport: str, pair: tuple[FakeDot | FakeDoh, ...]) -> None:
    """timeout 0.3s: the first server holds its reply for 2s; the try times out and the
    second server answers within the budget."""
    slow, fast = pair
    slow.handler = lambda rx: Delay(2.0, default_handler(rx))
    cfg = secure_config(pki, transport, [address(slow), address(fast)], timeout=0.3)
    async with running(cfg) as srv:
        r = await query(srv, "udp", "slow.example")
    assert r.rcode() == dns.rcode.NOERROR
    assert len(fast.received) == 1


async def test_every_server_silent_is_servfail_with_ede_22(
        pki: Pki, transport: str, pair: tuple[FakeDot | FakeDoh, ...]) -> None:
    """Both servers hold their replies past the budget: SERVFAIL, EDE 22 naming the group."""
    for fake in pair:
        fake.handler = lambda rx: None
    cfg = secure_config(pki, transport, [address(f) for f in pair], timeout=0.2, budget=0.5)
    async with running(cfg) as srv:
        r = await query(srv, "udp", "silent.example", use_edns=0)
    assert r.rcode() == dns.rcode.SERVFAIL
    (code, text), = ede_of(r)
    assert code == 22 and "no upstream in group g answered" in text


async def test_health_probes_go_over_the_transport_and_readyz_names_the_reason(
        pki: Pki, transport: str) -> None:
    """Health checks on: probes reach the good server over TLS/HTTPS; the server whose
    certificate names another host is marked down, and /readyz, once both are down,
    says why in the server's own words."""
    good, bad = make(pki, transport), make(pki, transport, cert=pki.wrong_name)
    async with good, bad:
        cfg = secure_config(pki, transport, [address(bad), address(good)])
        cfg["metrics"] = METRICS_ON
        cfg["upstreams"]["g"]["health_check"] = {"interval": 0.05, "timeout": 0.5, "rise": 1,
                                                 "fall": 1}
        async with running(cfg) as srv:
            servers = srv.runtime.groups["g"].servers
            await srv.health.wait_until(lambda: not servers[0].healthy)
            assert is_probe((await good.wait_for(1))[0])  # no client asked anything
            assert servers[1].healthy
            good.handler = lambda rx: None  # now the good one goes silent too
            await srv.health.wait_until(lambda: not health.readiness(srv)[0])
            readyz = await http_get(srv, "/readyz")
    assert readyz.status == 503
    group = readyz.json()["groups"]["g"]
    assert group["failures"][address(bad)].startswith(
        "certificate for 127.0.0.1 does not match dns.test")
    assert f"{address(bad)}: certificate for 127.0.0.1 does not match dns.test" \
        in group["reason"]


async def test_canary_resolves_over_the_transport(pki: Pki, transport: str) -> None:
    """A canary through an encrypted group: a public address for S3 fails it (readyz 503
    with the address), a private one passes."""
    fake = make(pki, transport)
    fake.handler = answers({(S3, "A"): ["A 52.219.1.1"]})
    async with fake:
        cfg = secure_config(pki, transport, [address(fake)])
        cfg["metrics"] = METRICS_ON
        cfg["upstreams"]["g"]["canary"] = {"name": S3}
        cfg["upstreams"]["g"]["health_check"] = {"interval": 0.05, "timeout": 0.5}
        async with running(cfg) as srv:
            await srv.health.wait_until(lambda: srv.health.canary_status("g")[0] == "failing")
            failing = (await http_get(srv, "/readyz")).json()["groups"]["g"]["canary"]
            fake.handler = answers({(S3, "A"): ["A 10.0.1.15"]})
            await srv.health.wait_until(lambda: srv.health.canary_status("g")[0] == "ok")
            assert (await http_get(srv, "/readyz")).status == 200
    assert "resolved to 52.219.1.1, outside the allowed networks" in failing


async def test_policy_blocks_a_public_answer_and_the_cache_keeps_it(
        pki: Pki, transport: str) -> None:
    """The answer policy judges what came over TLS/HTTPS: S3 answered public is
    SERVFAIL with EDE 15; asked again, the cache answers without the upstream."""
    fake = make(pki, transport)
    fake.handler = answers({(S3, "A"): ["A 52.219.1.1"]})
    async with fake:
        cfg = secure_config(pki, transport, [address(fake)],)
        cfg["zones"] = [{"match": ".", "upstream": "g", "policy": "private-only"}]
        cfg["policies"] = {"private-only": {"on_violation": "servfail"}}
        async with running(cfg) as srv:
            first = await query(srv, "udp", S3, use_edns=0)
            second = await query(srv, "tcp", S3, use_edns=0)
    for r in (first, second):
        assert r.rcode() == dns.rcode.SERVFAIL
        assert ede_of(r)[0][0] == 15
    assert len(fake.received) == 1


async def test_hook_reroutes_to_an_encrypted_group(pki: Pki, transport: str,
                                                   tmp_path: Path) -> None:
    """A hook reroutes a name to the encrypted group; the rest stays on the other group."""
    secure, plain = make(pki, transport), make(pki, transport)
    hook = tmp_path / "steer.py"
    hook.write_text("from forwarder.hooks import Continue, Reroute\n\n\n"
                    "def on_query(ctx):\n"
                    "    return Reroute('secure') if ctx.qname.startswith('corp.') "
                    "else Continue()\n")
    async with secure, plain:
        cfg = secure_config(pki, transport, [address(plain)])
        cfg["upstreams"]["secure"] = {**cfg["upstreams"]["g"], "servers": [address(secure)]}
        cfg["hooks"] = [{"path": str(hook)}]
        async with running(cfg) as srv:
            r = await query(srv, "udp", "corp.example")
            other = await query(srv, "udp", "www.example")
    assert r.rcode() == other.rcode() == dns.rcode.NOERROR
    assert [len(secure.received), len(plain.received)] == [1, 1]


async def test_explain_names_the_transport_and_server(pki: Pki, transport: str) -> None:
    """`forwarder explain` through an encrypted group: the upstream line says which
    transport and which server answered."""
    fake = make(pki, transport)
    async with fake:
        cfg = config_mod.from_data(secure_config(pki, transport, [address(fake)]), "x.yaml")
        out = io.StringIO()
        code = await explain.explain(cfg, "explain.example", "A", out)
    assert code == 0
    assert f"group g over {transport}: asked {address(fake)} (try 1)" in out.getvalue()
    assert "192.0.2.1" in out.getvalue()


async def test_reload_applies_new_tls_settings_and_a_rejected_one_changes_nothing(
        pki: Pki, transport: str, tmp_path: Path) -> None:
    """A reload that is rejected (a hook file that does not exist) leaves the running
    connection alone; one that is accepted applies the new tls settings (here a
    server_name the certificate does not carry: SERVFAIL naming it)."""
    import yaml

    fake = make(pki, transport)
    path = tmp_path / "forwarder.yaml"
    async with fake:
        cfg = secure_config(pki, transport, [address(fake)])
        cfg["cache"] = {"enabled": False}
        path.write_text(yaml.safe_dump(cfg))
        async with running(cfg, str(path)) as srv:
            assert (await query(srv, "udp", "a.example")).rcode() == dns.rcode.NOERROR
            cfg["upstreams"]["g"]["tls"]["server_name"] = "elsewhere.test"
            path.write_text(yaml.safe_dump({**cfg, "hooks": [{"path": "/nonexistent.py"}]}))
            assert not await srv.reload()
            kept = await query(srv, "udp", "b.example")
            path.write_text(yaml.safe_dump(cfg))
            assert await srv.reload()
            changed = await query(srv, "udp", "c.example", use_edns=0)
    assert kept.rcode() == dns.rcode.NOERROR and fake.connections == 1
    assert changed.rcode() == dns.rcode.SERVFAIL
    assert "certificate for 127.0.0.1 does not match elsewhere.test" in ede_of(changed)[0][1]
