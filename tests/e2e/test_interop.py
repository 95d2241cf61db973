"""Interoperability: the forwarder's DNS over TLS and DNS over HTTPS against the real
servers users run, from Debian's packages: Unbound (`tls-port`, `https-port`) and
dnsdist (`addTLSLocal`, `addDOHLocal`), each with a certificate made at test time by a
throwaway CA and serving local data on loopback (nothing is recursed, nothing leaves
the machine). Certificates are verified as in production.

A missing binary fails these tests when FORWARDER_REQUIRE_INTEROP is set (CI sets it in
.ci/run, which installs the packages); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from forwarder import metrics
from tests.conftest import forwarder_config, free_port, query, running
from tests.e2e.test_encrypted_upstreams import ede_of
from tests.secure_fakes import Pki

pytestmark = pytest.mark.slow

ANSWER = "192.0.2.53"
START_TIMEOUT = 15.0


def need(binary: str) -> str:
    """The path of *binary* (also looked for in /usr/sbin); fails or skips without it."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is None:
        reason = (f"{binary} is not installed (Debian package {binary}; .ci/run installs it)")
        if os.environ.get("FORWARDER_REQUIRE_INTEROP"):
            pytest.fail(reason)
        pytest.skip(reason + "; set FORWARDER_REQUIRE_INTEROP=1 to make this a failure")
    return path


@contextlib.asynccontextmanager
async def started(argv: list[str], plain_port: int, log: Path) -> AsyncIterator[None]:
    """Runs *argv* until the block ends (stopped by its PID); ready once it answers a
    plain UDP query on *plain_port*."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out,
                                                    stdin=asyncio.subprocess.DEVNULL)
    try:
        probe = dns.message.make_query("www.example.test", "A")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            if proc.returncode is not None:
                pytest.fail(f"{argv[0]} exited with {proc.returncode}:\n{log.read_text()}")
            try:
                await dns.asyncquery.udp(probe, "127.0.0.1", port=plain_port, timeout=0.2)
                break
            except (dns.exception.Timeout, OSError):
                if loop.time() > deadline:
                    pytest.fail(f"{argv[0]} did not answer within {START_TIMEOUT}s:\n"
                                f"{log.read_text()}")
                await asyncio.sleep(0.05)  # poll: another process has no event to wait on
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def ports(n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        port = free_port(socket.SOCK_STREAM)
        if port not in out:
            out.append(port)
    return out


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
async def unbound(pki: Pki, tmp_path: Path) -> AsyncIterator[dict[str, int]]:
    """Unbound serving www.example.test from local-data over UDP, TLS and HTTPS."""
    binary = need("unbound")
    plain, tls, https = free_port(), *ports(2)
    cert, key = pki.write("unbound")
    conf = tmp_path / "unbound.conf"
    conf.write_text(f"""server:
    interface: 127.0.0.1@{plain}
    interface: 127.0.0.1@{tls}
    interface: 127.0.0.1@{https}
    tls-port: {tls}
    https-port: {https}
    tls-service-pem: "{cert}"
    tls-service-key: "{key}"
    http-endpoint: "/dns-query"
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{tmp_path}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    do-ip6: no
    local-zone: "." refuse
    local-zone: "example.test." static
    local-data: "www.example.test. 300 IN A {ANSWER}"
remote-control:
    control-enable: no
""")
    async with started([binary, "-d", "-c", str(conf)], plain, tmp_path / "unbound.log"):
        yield {"tls": tls, "https": https}


@pytest.fixture
async def dnsdist(pki: Pki, tmp_path: Path) -> AsyncIterator[dict[str, int]]:
    """dnsdist answering www.example.test itself (SpoofAction) over UDP, TLS and HTTPS."""
    binary = need("dnsdist")
    plain, tls, https = free_port(), *ports(2)
    cert, key = pki.write("dnsdist")
    conf = tmp_path / "dnsdist.conf"
    conf.write_text(f"""setLocal("127.0.0.1:{plain}")
addTLSLocal("127.0.0.1:{tls}", "{cert}", "{key}")
addDOHLocal("127.0.0.1:{https}", "{cert}", "{key}", "/dns-query")
setACL({{"127.0.0.0/8"}})
setSecurityPollSuffix("")
addAction(QNameRule("www.example.test."), SpoofAction("{ANSWER}"))
addAction(AllRule(), RCodeAction(DNSRCode.REFUSED))
""")
    async with started([binary, "--supervised", "--disable-syslog", "-C", str(conf)], plain,
                       tmp_path / "dnsdist.log"):
        yield {"tls": tls, "https": https}


def group_for(pki: Pki, transport: str, port: int, server_name: str = "dns.test",
              **tls: object) -> dict[str, object]:
    server = f"127.0.0.1:{port}" if transport == "tls" else \
        f"https://127.0.0.1:{port}/dns-query"
    cfg = forwarder_config({"g": [server]})
    cfg["upstreams"]["g"].update(transport=transport, timeout=2.0, tls={
        "server_name": server_name, "ca_file": str(pki.ca_file), **tls})
    return cfg


async def ask_through(cfg: dict[str, object]) -> dns.message.Message:
    async with running(cfg) as srv:
        return await query(srv, "udp", "www.example.test", use_edns=0)


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_unbound_answers_through_verified_connection(pki: Pki, unbound: dict[str, int],
                                                           transport: str) -> None:
    """Unbound's tls-port / https-port: the answer comes back, certificate verified."""
    cfg = group_for(pki, transport, unbound[transport])
    r = await ask_through(cfg)
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == [ANSWER]


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_dnsdist_answers_through_verified_connection(pki: Pki, dnsdist: dict[str, int],
                                                           transport: str) -> None:
    """dnsdist's addTLSLocal / addDOHLocal: the answer comes back, certificate verified."""
    cfg = group_for(pki, transport, dnsdist[transport])
    r = await ask_through(cfg)
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == [ANSWER]


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_unbound_with_pinned_key(pki: Pki, unbound: dict[str, int],
                                       transport: str) -> None:
    """Unbound with its public key pinned: answered; with another key pinned: SERVFAIL
    naming the pin, and not a single query reached it."""
    good = await ask_through(group_for(pki, transport, unbound[transport], pins=[pki.pin()]))
    bad = await ask_through(group_for(pki, transport, unbound[transport],
                                      pins=[pki.pin(pki.wrong_name)]))
    assert good.rcode() == dns.rcode.NOERROR
    assert bad.rcode() == dns.rcode.SERVFAIL
    assert "matches none of the pinned keys" in ede_of(bad)[0][1]


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_unbound_certificate_for_another_name_is_refused(
        pki: Pki, unbound: dict[str, int], transport: str) -> None:
    """tls.server_name that Unbound's certificate does not carry: SERVFAIL, EDE 23
    saying so, counted as a certificate failure."""
    cfg = group_for(pki, transport, unbound[transport], server_name="resolver.example.internal")
    r = await ask_through(cfg)
    assert r.rcode() == dns.rcode.SERVFAIL
    code, text = ede_of(r)[0]
    assert code == 23
    assert "certificate for 127.0.0.1 does not match resolver.example.internal" in text


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_one_connection_and_handshake_for_many_queries(
        pki: Pki, unbound: dict[str, int], transport: str) -> None:
    """Three queries (cache off) to Unbound: one connection opened, reused twice, one
    handshake observed with a positive duration."""
    cfg = group_for(pki, transport, unbound[transport])
    cfg["cache"] = {"enabled": False}
    server = f"127.0.0.1:{unbound['tls']}" if transport == "tls" else \
        f"https://127.0.0.1:{unbound['https']}/dns-query"
    async with running(cfg) as srv:
        for _ in range(3):
            r = await query(srv, "udp", "www.example.test")
            assert [rr.address for rr in r.answer[0]] == [ANSWER]
        labels = {"group": "g", "server": server, "transport": transport}
        reused = metrics.REGISTRY.get_sample_value("forwarder_upstream_connections_total",
                                                   {**labels, "event": "reused"})
        count = metrics.REGISTRY.get_sample_value(
            "forwarder_upstream_handshake_duration_seconds_count", labels)
        total = metrics.REGISTRY.get_sample_value(
            "forwarder_upstream_handshake_duration_seconds_sum", labels)
    assert (count, reused) == (1, 2)
    assert total is not None and 0 < total < 2
