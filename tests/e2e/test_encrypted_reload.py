"""Encrypted upstreams across a reload: the queries in flight when the configuration is
swapped are answered over the connections of the configuration they started with."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
import yaml

from tests.conftest import query, running
from tests.e2e.test_encrypted_features import make
from tests.e2e.test_encrypted_upstreams import address, secure_config
from tests.fakes import Received, Response
from tests.secure_fakes import FakeDoh, FakeDot, Pki

pytestmark = pytest.mark.both_loops


def config_file(tmp_path: Path, pki: Pki, transport: str, servers: list[FakeDot | FakeDoh],
                **group: Any) -> tuple[dict[str, Any], str]:
    """A config asking *servers* over *transport*, without a cache, and its file."""
    cfg = secure_config(pki, transport, [address(s) for s in servers], **group)
    cfg["cache"] = {"enabled": False}
    path = tmp_path / "forwarder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return cfg, str(path)


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_query_in_flight_across_a_reload_is_answered_by_its_next_server(
        tmp_path: Path, transport: str) -> None:
    """Sequential DoT/DoH group, the first server silent: a query is waiting on it when
    the configuration is reloaded; its next try (the second server, over the group of the
    configuration it started with) answers it, not SERVFAIL; then the replaced
    configuration's connections are closed."""
    pki = Pki(tmp_path)
    silent, second = make(pki, transport), make(pki, transport)

    def quiet(rx: Received) -> Response:
        return None

    silent.handler = quiet
    async with silent, second:
        cfg, path = config_file(tmp_path, pki, transport, [silent, second], timeout=0.5)
        async with running(cfg, path) as srv:
            pending = asyncio.ensure_future(query(srv, "udp", "across.example"))
            await silent.wait_for(1)
            old_links = srv.runtime.groups["g"].links
            assert await srv.reload()
            r = await pending
            # once its queries are over, the replaced configuration holds no connection
            left = [link for link in old_links.values()
                    if link.channel is not None]  # type: ignore[attr-defined]
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.1"]
    assert len(second.received) == 1
    assert left == []


@pytest.mark.parametrize("transport", ["tls", "https"])
async def test_query_waiting_on_a_handshake_across_a_reload_is_answered(
        tmp_path: Path, transport: str) -> None:
    """DoT/DoH: a query waits for the connection's handshake when the configuration is
    reloaded: once the handshake completes, the query is answered over it."""
    pki = Pki(tmp_path)
    fake = make(pki, transport)
    fake.hold_handshake = asyncio.Event()
    async with fake:
        cfg, path = config_file(tmp_path, pki, transport, [fake], timeout=2.0, attempts=1)
        async with running(cfg, path) as srv:
            pending = asyncio.ensure_future(query(srv, "udp", "handshake.example", use_edns=0))
            await fake.handshake_held.wait()
            assert await srv.reload()
            fake.hold_handshake.set()
            r = await pending
    assert r.rcode() == dns.rcode.NOERROR
    assert [rr.address for rr in r.answer[0]] == ["192.0.2.1"]
