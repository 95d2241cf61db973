"""`forwarder health -c FILE`, the container's HEALTHCHECK: run as a user runs it, against
a forwarder serving the same file, it exits 0 while that forwarder is ready and 1 with a
reason when it is not (not ready, not there, or the file is unreadable).

With metrics on it asks /readyz on `metrics.listen` (loopback for a wildcard address);
with metrics off it asks DNS on the first listener.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from forwarder import config as config_mod
from forwarder.ops import health
from forwarder.upstream.health import readiness
from tests.conftest import dump, forwarder_config, free_port, running
from tests.fakes import FakeUpstream, Received, reply
from tests.test_cli import run_cli


def config_file(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "forwarder.yaml"
    path.write_text(dump(cfg))
    return path


def metrics_on(fake: FakeUpstream, listen: str, **extra: Any) -> dict[str, Any]:
    return forwarder_config({"up": [fake.addr]}, metrics={"enabled": True, "listen": listen},
                            **extra)


def dns_only(fake: FakeUpstream, port: int, protocols: list[str] | None = None) -> dict[str, Any]:
    cfg = forwarder_config({"up": [fake.addr]})
    cfg["listen"] = [{"address": "127.0.0.1", "port": port}]
    if protocols:
        cfg["listen"][0]["protocols"] = protocols
    return cfg


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"], ids=["loopback", "wildcard"])
async def test_ready_over_readyz(tmp_path: Path, upstream: FakeUpstream, host: str) -> None:
    """Metrics on HOST:PORT and a healthy upstream: exit 0, /readyz was asked (on
    127.0.0.1 for the wildcard 0.0.0.0, the container's setting)."""
    port = free_port(socket.SOCK_STREAM)
    cfg = metrics_on(upstream, f"{host}:{port}")
    path = config_file(tmp_path, cfg)
    async with running(cfg, str(path)):
        code, out, err = await run_cli("health", "-c", str(path))
    assert code == 0, err
    assert f"http://127.0.0.1:{port}/readyz: ready" in out


def test_wildcard_addresses_map_to_loopback() -> None:
    cfg = config_mod.from_data({
        "listen": [{"address": "::", "port": 53}], "zones": [{"match": ".", "action": "refuse"}],
        "metrics": {"enabled": False}})
    assert health.target(cfg) == health.Target("udp", "::1", 53)
    cfg = config_mod.from_data({
        "zones": [{"match": ".", "action": "refuse"}], "metrics": {"listen": "[::]:9153"}})
    assert health.target(cfg) == health.Target("http", "::1", 9153)


async def test_not_ready_when_every_upstream_is_down(tmp_path: Path) -> None:
    """/readyz answers 503 once the only server fails its probes: exit 1, and the reason
    from /readyz's report is printed."""
    port = free_port(socket.SOCK_STREAM)
    async with FakeUpstream(handler=lambda rx: None) as silent:
        cfg = metrics_on(silent, f"127.0.0.1:{port}")
        cfg["upstreams"]["up"]["health_check"] = {"interval": 0.05, "timeout": 0.05, "fall": 1}
        path = config_file(tmp_path, cfg)
        async with running(cfg, str(path)) as srv:
            await until(lambda: not readiness(srv)[0])
            code, out, err = await run_cli("health", "-c", str(path))
    assert code == 1, out
    assert f"http://127.0.0.1:{port}/readyz: 503 not ready" in err
    assert "group up: no healthy server" in err


async def test_nothing_listening(tmp_path: Path, upstream: FakeUpstream) -> None:
    port = free_port(socket.SOCK_STREAM)
    path = config_file(tmp_path, metrics_on(upstream, f"127.0.0.1:{port}"))
    code, _, err = await run_cli("health", "-c", str(path))
    assert code == 1
    assert f"http://127.0.0.1:{port}/readyz: Connection refused" in err


async def test_unreadable_config_is_unhealthy(tmp_path: Path) -> None:
    """Exit 1 (never Docker's reserved 2), naming the file and the problem."""
    path = tmp_path / "broken.yaml"
    path.write_text("zones: [{match: ., upstream: nowhere}]\n")
    code, _, err = await run_cli("health", "-c", str(path))
    assert code == 1
    assert "unknown upstream group 'nowhere'" in err
    assert f"{path}: cannot tell where the forwarder listens: unhealthy" in err


@pytest.mark.parametrize("protocols", [None, ["tcp"]], ids=["udp", "tcp-only"])
async def test_metrics_off_asks_dns(tmp_path: Path, upstream: FakeUpstream,
                                    protocols: list[str] | None) -> None:
    """Metrics off: a DNS query to the first listener (over TCP when it has only TCP)."""
    port = free_port()
    cfg = dns_only(upstream, port, protocols)
    path = config_file(tmp_path, cfg)
    async with running(cfg, str(path)):
        code, out, err = await run_cli("health", "-c", str(path))
    assert code == 0, err
    kind = "TCP" if protocols else "UDP"
    assert f"DNS over {kind} to 127.0.0.1:{port}: answered NOERROR" in out
    assert any(rx.message is not None and rx.message.question[0].name.to_text() == "."
               for rx in upstream.received), "the probe's question was not forwarded"


async def test_metrics_off_servfail_is_unhealthy(tmp_path: Path) -> None:
    """The upstream answers SERVFAIL: the forwarder cannot answer, so it is not healthy."""
    def servfail(rx: Received) -> Any:
        return reply(rx.message, rcode=2)  # type: ignore[arg-type]

    port = free_port()
    async with FakeUpstream(handler=servfail) as failing:
        cfg = dns_only(failing, port)
        path = config_file(tmp_path, cfg)
        async with running(cfg, str(path)):
            code, _, err = await run_cli("health", "-c", str(path))
    assert code == 1
    assert "answered SERVFAIL" in err


async def test_stopped_server_is_unhealthy(tmp_path: Path, upstream: FakeUpstream) -> None:
    """Healthy while serving, exit 1 (no reply in time) after the server stopped."""
    port = free_port()
    cfg = dns_only(upstream, port)
    path = config_file(tmp_path, cfg)
    async with running(cfg, str(path)):
        code, _, _ = await run_cli("health", "-c", str(path))
        assert code == 0
    code, _, err = await run_cli("health", "-c", str(path), "--timeout", "0.3")
    assert code == 1
    assert f"DNS over UDP to 127.0.0.1:{port}" in err
