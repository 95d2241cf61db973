"""`reload: {watch: true}`: a forwarder reloads when its configuration file changes, as on
SIGHUP. Rewriting the file changes what clients get over DNS; an invalid file is rejected
(counted, logged) and the running configuration keeps answering; Kubernetes' ConfigMap
swap (the file is a symlink through `..data`, repointed at a new directory) is noticed.

Each step waits on the server's reload callback (with a deadline), then asks over DNS.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from forwarder import config as config_mod
from forwarder import metrics
from forwarder.server import Server
from tests.conftest import dump, forwarder_config, query
from tests.e2e.test_reload import reloads
from tests.fakes import FakeUpstream

NAME = "watched.example.com"
DEADLINE = 10.0  # seconds for a change to be noticed (the poll interval is 0.05)


def config(fake: FakeUpstream, address: str | None = None, watch: bool = True) -> dict[str, Any]:
    """Everything to *fake* (which answers 192.0.2.1); with *address*, NAME answered
    locally with it."""
    cfg = forwarder_config({"up": [fake.addr]}, reload={"watch": watch, "interval": 0.05})
    if address is not None:
        cfg["zones"].insert(0, {"match": NAME, "records": [
            {"name": NAME, "type": "A", "value": address}]})
    return cfg


class Reloads:
    """The results of the server's reloads, in order, as they happen."""

    def __init__(self, srv: Server) -> None:
        self.results: asyncio.Queue[bool] = asyncio.Queue()
        srv.on_reload.append(self.results.put_nowait)

    async def next(self) -> bool:
        return await asyncio.wait_for(self.results.get(), DEADLINE)


async def answer(srv: Server, transport: str = "udp") -> str:
    msg = await query(srv, transport, NAME)
    return msg.answer[0][0].address


async def serve(path: Path) -> AsyncIterator[Server]:
    srv = Server(config_mod.load(str(path)), config_path=str(path))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(deadline=2.0)


@pytest.fixture
async def watched(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[tuple[Server, Path]]:
    path = tmp_path / "forwarder.yaml"
    path.write_text(dump(config(upstream)))
    async for srv in serve(path):
        yield srv, path


async def test_rewritten_file_is_served(watched: tuple[Server, Path], upstream: FakeUpstream,
                                        transport: str) -> None:
    srv, path = watched
    seen = Reloads(srv)
    assert await answer(srv, transport) == "192.0.2.1"  # from the upstream
    path.write_text(dump(config(upstream, "10.0.100.21")))
    assert await seen.next() is True
    assert await answer(srv, transport) == "10.0.100.21"  # the new local record
    path.write_text(dump(config(upstream, "10.0.100.22")))
    assert await seen.next() is True
    assert await answer(srv, transport) == "10.0.100.22"


async def test_invalid_file_keeps_the_running_configuration(
        watched: tuple[Server, Path], upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    """As SIGHUP: the errors are logged and counted, the old configuration answers, and
    the next valid version of the file is taken."""
    srv, path = watched
    seen = Reloads(srv)
    path.write_text(dump(config(upstream, "10.0.100.21")))
    assert await seen.next() is True
    failures = reloads("failure")
    with caplog.at_level(logging.ERROR, logger="forwarder"):
        path.write_text("zones: [{match: ., upstream: nowhere}]\n")
        assert await seen.next() is False
    assert reloads("failure") == failures + 1
    assert metrics.REGISTRY.get_sample_value("forwarder_config_last_reload_successful") == 0
    assert "unknown upstream group 'nowhere'" in caplog.text
    assert "still serving the previous configuration" in caplog.text
    assert await answer(srv) == "10.0.100.21"
    path.write_text(dump(config(upstream, "10.0.100.23")))
    assert await seen.next() is True
    assert await answer(srv) == "10.0.100.23"
    assert metrics.REGISTRY.get_sample_value("forwarder_config_last_reload_successful") == 1


async def test_configmap_symlink_swap(tmp_path: Path, upstream: FakeUpstream) -> None:
    """The kubelet's update: forwarder.yaml -> ..data/forwarder.yaml, ..data -> a
    timestamped directory; a new directory is written, then ..data is renamed over."""
    mount = tmp_path / "config"
    mount.mkdir()

    def publish(version: str, cfg: dict[str, Any]) -> None:
        directory = mount / f"..{version}"
        directory.mkdir()
        (directory / "forwarder.yaml").write_text(dump(cfg))
        tmp = mount / "..data_tmp"
        tmp.symlink_to(directory.name)
        os.replace(tmp, mount / "..data")  # rename(2): atomic, as the kubelet does

    publish("2024_01_01", config(upstream, "10.0.100.21"))
    (mount / "forwarder.yaml").symlink_to("..data/forwarder.yaml")
    async for srv in serve(mount / "forwarder.yaml"):
        seen = Reloads(srv)
        assert await answer(srv) == "10.0.100.21"
        publish("2024_01_02", config(upstream, "10.0.100.22"))
        assert await seen.next() is True
        assert await answer(srv) == "10.0.100.22"


async def test_removed_file_keeps_serving_until_it_returns(
        watched: tuple[Server, Path], upstream: FakeUpstream,
        caplog: pytest.LogCaptureFixture) -> None:
    srv, path = watched
    seen = Reloads(srv)
    with caplog.at_level(logging.WARNING, logger="forwarder"):
        path.unlink()
        async with asyncio.timeout(DEADLINE):
            while "is gone" not in caplog.text:
                await asyncio.sleep(0.02)
    assert await answer(srv) == "192.0.2.1"
    path.write_text(dump(config(upstream, "10.0.100.24")))
    assert await seen.next() is True
    assert await answer(srv) == "10.0.100.24"


async def test_watch_turned_on_by_a_reload(tmp_path: Path, upstream: FakeUpstream) -> None:
    """The running configuration decides: a server started with `watch: false` watches
    once a reload (SIGHUP) loads a file that says `watch: true`."""
    path = tmp_path / "forwarder.yaml"
    path.write_text(dump(config(upstream, watch=False)))
    async for srv in serve(path):
        seen = Reloads(srv)
        path.write_text(dump(config(upstream, "10.0.100.21", watch=True)))
        assert await srv.reload() is True  # what SIGHUP does
        assert await seen.next() is True
        assert await answer(srv) == "10.0.100.21"
        path.write_text(dump(config(upstream, "10.0.100.22", watch=True)))
        assert await seen.next() is True
        assert await answer(srv) == "10.0.100.22"
