"""Shared fixtures: fake upstreams, a running forwarder on loopback, and an `ask` client.

Async tests run on uvloop when it is importable, the loop `forwarder run` uses in
production. Modules marked `both_loops` run on the default asyncio loop as well, the
fallback when uvloop is missing: the listeners and upstream transports, where the two
loops' transports differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype
import pytest
import yaml

from forwarder import config as config_mod
from forwarder import metrics
from forwarder.server import Server
from tests.fakes import FakeUpstream

# No test may reach the real AWS: fake credentials, no credential or config files, no
# instance metadata, and an API endpoint on loopback where nothing listens. Tests that
# want an AWS API use moto (tests/aws.py) and point AWS_ENDPOINT_URL at it, and
# FORWARDER_AWS_TESTING=1 makes forwarder.aws.api refuse any endpoint off loopback.
os.environ.update({
    "FORWARDER_AWS_TESTING": "1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",  # moto's EC2 starts in a second, not four
})
for _key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_")] + [
        "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"]:
    os.environ.pop(_key, None)

try:
    import uvloop
except ImportError:  # not installed off Linux: everything runs on the default loop
    uvloop = None  # type: ignore[assignment]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run async tests on uvloop and on the default asyncio loop")


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> dict[str, LoopFactory]:
    """The event loops each async test runs on (a pytest-asyncio hook; one loop keeps the
    test's id unchanged, two parametrize it as [uvloop] and [asyncio])."""
    if uvloop is None:
        return {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("both_loops") is not None:
        return {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def forget_upstream_series() -> Iterator[None]:
    """Drops the series labelled with upstream servers after each test. Every fake upstream
    has a port of its own, so without this the registry keeps the series of every server
    of every test, and each scrape or get_sample_value walks them all (a second or more per
    test late in the suite). Tests compare before and after their own traffic, so nothing
    reads these series across tests."""
    yield
    for metric in (metrics.upstream_queries, metrics.upstream_errors, metrics.upstream_duration,
                   metrics.upstream_healthy, metrics.upstream_health_checks,
                   metrics.upstream_connections, metrics.upstream_handshake_duration):
        metric.clear()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def upstream2() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


def forwarder_config(
    upstreams: dict[str, list[str]] | None = None, zones: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A config dict for tests: listen on 127.0.0.1:0, groups of fake upstreams, fast timeouts."""
    groups = {
        name: {"servers": servers, "timeout": 0.3, "attempts": 2,
               "health_check": {"enabled": False}}
        for name, servers in (upstreams or {}).items()
    }
    cfg: dict[str, Any] = {
        "listen": [{"address": "127.0.0.1", "port": 0}],
        "upstreams": groups,
        "zones": zones or [{"match": ".", "upstream": next(iter(groups))}],
        "metrics": {"enabled": False},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def in_flight(srv: Server) -> tuple[int, int, int, int]:
    """What *srv* holds for queries being resolved: resolutions, their tasks, their counts
    in the upstream groups' budgets, and fetches in the cache's table: all 0 when idle."""
    rt = srv.runtime
    cache = rt.cache
    return (srv.pipeline.inflight, len(srv.pipeline.tasks),
            sum(g.load for g in rt.groups.values()), len(cache.flights) if cache is not None else 0)


@contextlib.asynccontextmanager
async def running(cfg: dict[str, Any], path: str | None = None) -> AsyncIterator[Server]:
    """Starts a forwarder in-process for *cfg* and stops it afterwards."""
    server = Server(config_mod.from_data(cfg, path or "<test>"), config_path=path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(deadline=2.0)


@pytest.fixture
def start_forwarder() -> Callable[..., contextlib.AbstractAsyncContextManager[Server]]:
    return running


Ask = Callable[..., Awaitable[dns.message.Message]]


async def query(server: Server, transport: str, qname: str, qtype: str = "A",
                timeout: float = 3.0, **make: Any) -> dns.message.Message:
    """Sends one query to *server* with dnspython over *transport*; answers the response."""
    q = dns.message.make_query(qname, dns.rdatatype.from_text(qtype), **make)
    host, port = server.address(transport)
    if transport == "udp":
        return await dns.asyncquery.udp(q, host, port=port, timeout=timeout,
                                        ignore_trailing=True)
    return await dns.asyncquery.tcp(q, host, port=port, timeout=timeout)


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def free_port(kind: int | None = None) -> int:
    """A loopback port free right now for UDP and TCP (or only for *kind*), for a server
    started in another process that cannot report a port it chose itself (workers share
    one with SO_REUSEPORT). Picked below the kernel's ephemeral range, so the sockets the
    tests and the forwarder open meanwhile (upstream pools, clients) cannot take it
    before the process binds it."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if kind is None else (kind,)
    for _ in range(200):
        port = random.randrange(max(low // 2, 1024), low)
        try:
            for k in kinds:
                with socket.socket(socket.AF_INET, k) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise OSError("no free loopback port below the ephemeral range")


def logged_queries(path: Path) -> list[dict[str, Any]]:
    """The query log lines a server wrote to *path* (JSON, one per query)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg)


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http_get(server: Server, path: str, method: str = "GET",
                   raw: bytes | None = None) -> HttpResponse:
    """Sends one HTTP/1.1 request (or *raw* bytes) to the server's metrics address."""
    assert server.http_address is not None, "metrics are not enabled"
    reader, writer = await asyncio.open_connection(*server.http_address)
    try:
        writer.write(raw or f"{method} {path} HTTP/1.1\r\nHost: forwarder\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status_line.split(" ")[1]), headers, body)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: Server) -> Samples:
    """GETs /metrics and answers every sample as {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = await http_get(server, "/metrics")
    assert response.status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.body.decode())
            for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value from a `scrape`, 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def poll_process(what: Callable[[], Any], proc: asyncio.subprocess.Process, log: Path,
                       timeout: float = 15.0) -> Any:
    """Calls *what* (sync or async) until it answers something true, for tests that drive a
    real `forwarder run` process (whose readiness no event in this process can signal);
    fails with the process's log if it exits or *timeout* passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            pytest.fail(f"forwarder exited with {proc.returncode}:\n{log.read_text()}")
        try:
            result = what()
            if asyncio.iscoroutine(result):
                result = await result
        except (dns.exception.Timeout, OSError):
            result = None
        if result:
            return result
        await asyncio.sleep(0.05)  # poll interval
    pytest.fail(f"gave up waiting after {timeout} s:\n{log.read_text()}")


# --- AWS (moto) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_mock() -> Iterator[None]:
    """moto's in-process mock, for a whole module: starting and resetting every backend it
    loaded costs seconds, so tests reset only the ones they use (`moto_world`)."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def moto_world(moto_mock: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A World on moto's in-process mock, emptied first (which serves only AWS's own
    endpoint names, so AWS_ENDPOINT_URL is removed for the test)."""
    from moto.backends import get_backend

    from tests.awsfakes import World

    for service in ("ec2", "route53resolver", "elbv2"):
        get_backend(service).reset()  # type: ignore[call-overload]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return World()


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """moto's server (the werkzeug application `moto_server` runs) on 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_server(moto_server_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A World on moto's server, emptied for each test; boto3 in this process (the
    forwarder's discovery included) talks to it through AWS_ENDPOINT_URL."""
    import urllib.request

    from tests.awsfakes import World

    urllib.request.urlopen(urllib.request.Request(f"{moto_server_url}/moto-api/reset",
                                                  method="POST"), timeout=5).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    world = World()
    world.url = moto_server_url  # type: ignore[attr-defined]
    yield world
