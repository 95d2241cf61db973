"""Reload: a valid file is swapped in atomically while clients keep asking over UDP and TCP
(no query lost, in-flight queries finish under the old configuration, sockets kept); an
invalid file is rejected with every error logged and counted, and the old configuration
keeps serving; the cache survives a reload that does not change answers.

The last test runs the real `forwarder run` process: SIGHUP with an invalid then a valid
file (through `forwarder reload --pid-file`), then SIGTERM with a query in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest
import yaml

from forwarder import cli, metrics
from forwarder.server import Server
from tests.conftest import forwarder_config, free_port, poll_process, query, running
from tests.fakes import Delay, FakeUpstream, Received, Response, reply

OLD, NEW = "192.0.2.1", "192.0.2.2"


def answering(address: str, slow: float = 0.0) -> Callable[[Received], Response]:
    """A handler answering *address*; names starting with "slow" after *slow* seconds."""

    def handle(rx: Received) -> Response:
        assert rx.message is not None
        answer = reply(rx.message, f"A {address}")
        if slow and rx.message.question[0].name.to_text().startswith("slow"):
            return Delay(slow, answer)
        return answer

    return handle


def config(group: FakeUpstream, **extra: Any) -> dict[str, Any]:
    cfg = forwarder_config({"up": [group.addr]}, **extra)
    cfg["upstreams"]["up"].update(timeout=1.0, attempts=1)
    return cfg


def write(path: Path, cfg: dict[str, Any] | str) -> None:
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))


def address_of(msg: dns.message.Message) -> str | None:
    return msg.answer[0][0].address if msg.answer else None


async def asked(fake: FakeUpstream, name: str) -> None:
    """Waits until *fake* has received a query for *name*."""
    seen = 0
    while True:
        received = await fake.wait_for(seen + 1)
        if any(rx.message is not None and rx.message.question[0].name.to_text() == name
               for rx in received[seen:]):
            return
        seen = len(received)


def reloads(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("forwarder_config_reloads_total",
                                             {"result": result}) or 0.0


INVALID = """\
listen: [{address: 127.0.0.1, port: 0}]
upstreams: {up: {servers: ["127.0.0.1:53"]}}
zones:
  - {match: ".", upstream: nowhere}
cache: {max_entries: lots}
"""


class Stream:
    """Clients asking without pause until told to stop: UDP (a new socket per query) and
    TCP (one connection each, kept across the reloads). Records every answer and failure."""

    def __init__(self, srv: Server, udp_clients: int = 3, tcp_clients: int = 2,
                 limit: int = 400) -> None:
        self.srv = srv
        self.answers: list[str | None] = []
        self.failures: list[str] = []
        self.limit = limit  # queries per client at most: the stream is bounded anyway
        self.stopping = asyncio.Event()
        self.progress = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._udp(i)) for i in range(udp_clients)]
        self.tasks += [asyncio.ensure_future(self._tcp(i)) for i in range(tcp_clients)]

    def _name(self, client: str, i: int) -> str:
        # a few names repeat (cache hits), some are slow (in flight during a swap)
        kind = ("slow" if i % 7 == 0 else "n") + str(i % 5 if i % 3 else i)
        return f"{kind}.{client}.example.com"

    def _record(self, msg: dns.message.Message | None, what: str) -> None:
        if msg is None or msg.rcode() != dns.rcode.NOERROR or address_of(msg) is None:
            self.failures.append(what if msg is None else f"{what}: {msg.rcode()!r}")
        else:
            self.answers.append(address_of(msg))
        self.progress.set()

    async def _udp(self, n: int) -> None:
        for i in range(self.limit):
            if self.stopping.is_set():
                return
            name = self._name(f"u{n}", i)
            try:
                msg = await query(self.srv, "udp", name, timeout=2.0)
            except dns.exception.Timeout:
                msg = None
            self._record(msg, f"udp {name} timed out")

    async def _tcp(self, n: int) -> None:
        host, port = self.srv.address("tcp")
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(self.limit):
                if self.stopping.is_set():
                    return
                name = self._name(f"t{n}", i)
                data = dns.message.make_query(name, "A").to_wire()
                writer.write(struct.pack("!H", len(data)) + data)
                try:
                    async with asyncio.timeout(2.0):
                        (length,) = struct.unpack("!H", await reader.readexactly(2))
                        msg = dns.message.from_wire(await reader.readexactly(length))
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    msg = None
                self._record(msg, f"tcp {name} lost")
                if msg is None:
                    return
        finally:
            writer.close()

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.progress.clear()
                await self.progress.wait()

    async def finish(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self.tasks)


async def test_reload_under_steady_load_loses_no_query(tmp_path: Path, upstream: FakeUpstream,
                                                       upstream2: FakeUpstream) -> None:
    """Reload: while 3 UDP and 2 TCP clients ask without pause, a valid file moves the
    default zone to another upstream and then an invalid file is rejected. Every query is
    answered NOERROR; a query in flight at the swap finishes under the old configuration;
    answers switch to the new upstream; the listening sockets stay the same."""
    upstream.handler = answering(OLD, slow=0.1)
    upstream2.handler = answering(NEW, slow=0.1)
    path = tmp_path / "forwarder.yaml"
    old_cfg = config(upstream)
    write(path, old_cfg)
    async with running(old_cfg, path=str(path)) as srv:
        sockets = [lst.sock for lst in srv.udp + srv.tcp]
        stream = Stream(srv)
        await stream.until(lambda: len(stream.answers) >= 100)

        try:
            straddling = asyncio.ensure_future(query(srv, "tcp", "slow-straddle.example.com"))
            await asked(upstream, "slow-straddle.example.com.")
            write(path, config(upstream2))
            assert await srv.reload() is True
            assert address_of(await straddling) == OLD
            await stream.until(lambda: NEW in stream.answers[-20:])
            answered = len(stream.answers)

            write(path, INVALID)
            assert await srv.reload() is False
            await stream.until(lambda: len(stream.answers) >= answered + 100)
        finally:
            await stream.finish()
        assert [lst.sock for lst in srv.udp + srv.tcp] == sockets
        assert address_of(await query(srv, "udp", "after.example.com")) == NEW

    assert stream.failures == []
    assert len(stream.answers) >= 200
    switched = stream.answers.index(NEW)
    assert set(stream.answers[:switched]) == {OLD}
    assert stream.answers[-1] == NEW


async def test_invalid_file_is_rejected_with_every_error(tmp_path: Path, upstream: FakeUpstream,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Reload: a file with two problems: both are logged with their field, the failure is
    counted, and the old configuration keeps answering."""
    path = tmp_path / "forwarder.yaml"
    cfg = config(upstream)
    write(path, cfg)
    failures = reloads("failure")
    async with running(cfg, path=str(path)) as srv:
        before = srv.runtime
        write(path, INVALID)
        with caplog.at_level(logging.ERROR, logger="forwarder"):
            assert await srv.reload() is False
        assert srv.runtime is before
        assert address_of(await query(srv, "udp", "www.example.com")) == OLD
    errors = [r.getMessage() for r in caplog.records]
    assert errors[:2] == [
        f"reload rejected: {path}:4:28: zones[0].upstream: unknown upstream group 'nowhere' "
        "(defined: system, up)",
        f"reload rejected: {path}:5:22: cache.max_entries: expected a whole number, found a "
        "string 'lots'"]
    assert reloads("failure") == failures + 1


async def test_unreadable_file_is_rejected(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "forwarder.yaml"
    cfg = config(upstream)
    write(path, cfg)
    async with running(cfg, path=str(path)) as srv:
        path.unlink()
        assert await srv.reload() is False
        assert address_of(await query(srv, "tcp", "www.example.com")) == OLD


async def test_reload_keeps_cache_when_answers_do_not_change(tmp_path: Path,
                                                             upstream: FakeUpstream) -> None:
    """Reload: only the ACL changes: the cache and its entries carry over."""
    path = tmp_path / "forwarder.yaml"
    cfg = config(upstream)
    write(path, cfg)
    async with running(cfg, path=str(path)) as srv:
        await query(srv, "udp", "www.example.com")
        write(path, {**cfg, "acl": {"allow": ["127.0.0.0/8", "10.0.0.0/8"]}})
        assert await srv.reload() is True
        await query(srv, "udp", "www.example.com")
    assert len(upstream.received) == 1


async def test_reload_that_changes_routing_empties_cache(tmp_path: Path, upstream: FakeUpstream,
                                                         upstream2: FakeUpstream) -> None:
    upstream2.handler = answering(NEW)
    path = tmp_path / "forwarder.yaml"
    cfg = config(upstream)
    write(path, cfg)
    async with running(cfg, path=str(path)) as srv:
        assert address_of(await query(srv, "udp", "www.example.com")) == OLD
        write(path, config(upstream2))
        assert await srv.reload() is True
        assert address_of(await query(srv, "udp", "www.example.com")) == NEW


async def test_reload_that_sets_protection_policy_empties_cache(tmp_path: Path,
                                                                 upstream: FakeUpstream) -> None:
    """A public S3 answer cached while no policy guarded it is not served once a reload
    sets `protection.policy`: the next query is judged, and blocked."""
    upstream.handler = answering("52.219.150.29")
    path = tmp_path / "forwarder.yaml"
    cfg = config(upstream, policies={"p": {}})
    write(path, cfg)
    name = "s3.ap-northeast-1.amazonaws.com"
    async with running(cfg, path=str(path)) as srv:
        before = await query(srv, "udp", name)
        write(path, {**cfg, "protection": {"policy": "p"}})
        assert await srv.reload() is True
        after = await query(srv, "udp", name)
    assert address_of(before) == "52.219.150.29"
    assert after.rcode() == dns.rcode.SERVFAIL and not after.answer
    assert len(upstream.received) == 2


async def test_start_only_changes_are_logged_once_naming_each_key(
        tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    """Reload: a file that changes `listen`, `metrics.listen` and the ACL: the ACL applies,
    the listener and the metrics address keep their running values, and each of the two
    keys is logged once with both values. Reloading the same file logs nothing new;
    reverting it logs nothing; changing it again is logged again."""
    path = tmp_path / "forwarder.yaml"
    cfg = config(upstream)
    write(path, cfg)
    changed = {**cfg, "listen": [{"address": "127.0.0.1", "port": 5399}],
               "metrics": {"enabled": False, "listen": "127.0.0.1:9999"},
               "acl": {"allow": ["10.0.0.0/8"]}}

    async def reload_with(content: dict[str, Any]) -> list[str]:
        write(path, content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="forwarder"):
            assert await srv.reload() is True
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    tail = "only a restart applies it; the running value stays until then"
    async with running(cfg, path=str(path)) as srv:
        assert await reload_with(changed) == [
            f"listen: [127.0.0.1:5399] in {path}, [127.0.0.1:0] running: {tail}",
            f"metrics.listen: 127.0.0.1:9999 in {path}, 127.0.0.1:9153 running: {tail}",
        ]
        assert srv.config.listen[0].port == 0 and srv.config.metrics.listen == "127.0.0.1:9153"
        assert [str(n) for n in srv.runtime.config.acl] == ["10.0.0.0/8"]  # applied
        assert await reload_with(changed) == []  # the same change: said already
        assert await reload_with(cfg) == []  # back to the running values
        assert await reload_with(changed) == [
            f"listen: [127.0.0.1:5399] in {path}, [127.0.0.1:0] running: {tail}",
            f"metrics.listen: 127.0.0.1:9999 in {path}, 127.0.0.1:9153 running: {tail}",
        ]


# --- the real process ---------------------------------------------------------------------


def process_config(group: FakeUpstream, port: int) -> dict[str, Any]:
    cfg = config(group, listen=[{"address": "127.0.0.1", "port": port}])
    cfg["allow_root"] = True  # test runs may be root; no user to drop to here
    return cfg


async def ask_process(port: int, name: str, transport: str = "udp",
                      timeout: float = 2.0) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    if transport == "udp":
        return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=timeout)
    return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=timeout)


async def poll(what: Callable[[], Any], proc: asyncio.subprocess.Process, log: Path,
               timeout: float = 15.0) -> Any:
    return await poll_process(what, proc, log, timeout)


async def test_process_reloads_on_sighup_and_drains_on_sigterm(
        tmp_path: Path, upstream: FakeUpstream, upstream2: FakeUpstream) -> None:
    """Process: `forwarder run` answers; SIGHUP with an invalid file logs the errors and
    keeps the old answers; `forwarder reload --pid-file` with a valid file switches
    upstreams; SIGTERM with a 0.5 s query in flight over UDP and TCP answers both and the
    process exits 0."""
    upstream2.handler = answering(NEW, slow=0.5)
    port = free_port()
    path, log, pid_file = tmp_path / "forwarder.yaml", tmp_path / "log", tmp_path / "pid"
    write(path, process_config(upstream, port))
    with open(log, "wb") as log_out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "forwarder", "run", "-c", str(path),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_out, stderr=log_out)
    try:
        first = await poll(lambda: ask_process(port, "www.example.com", timeout=0.3), proc, log)
        assert address_of(first) == OLD

        write(path, INVALID)
        os.kill(proc.pid, signal.SIGHUP)
        await poll(lambda: "reload failed" in log.read_text(), proc, log)
        assert "zones[0].upstream" in log.read_text()
        assert address_of(await ask_process(port, "www.example.com")) == OLD

        write(path, process_config(upstream2, port))
        pid_file.write_text(f"{proc.pid}\n")
        assert cli.reload_running(str(pid_file)) == cli.EXIT_OK
        switched = await poll(lambda: ask_process(port, "www.example.com", timeout=0.5),
                              proc, log)
        while address_of(switched) != NEW:
            switched = await poll(lambda: ask_process(port, "www.example.com", timeout=0.5),
                                  proc, log)

        seen = len(upstream2.received)
        in_flight = [asyncio.ensure_future(ask_process(port, f"slow-{t}.example.com", t, 5.0))
                     for t in ("udp", "tcp")]
        await upstream2.wait_for(seen + 2)
        proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*in_flight)
        assert [address_of(a) for a in answers] == [NEW, NEW]
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


async def test_dropped_server_series_are_forgotten(upstream: FakeUpstream,
                                                   upstream2: FakeUpstream,
                                                   tmp_path: Path) -> None:
    """A reload that removes an upstream server removes its metric series too, so
    /metrics does not carry dead servers forever."""
    import yaml

    from forwarder import metrics
    from tests.conftest import forwarder_config, query, running

    cfg = forwarder_config({"up": [upstream.addr]})
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(cfg))
    labels = {"group": "up", "server": upstream.addr, "transport": "udp"}
    async with running(cfg, path=str(path)) as srv:
        await query(srv, "udp", "a.example.com")
        assert metrics.REGISTRY.get_sample_value("forwarder_upstream_queries_total", labels) == 1
        cfg["upstreams"]["up"]["servers"] = [upstream2.addr]
        path.write_text(yaml.safe_dump(cfg))
        assert await srv.reload()
        assert metrics.REGISTRY.get_sample_value("forwarder_upstream_queries_total",
                                                 labels) is None
        await query(srv, "udp", "b.example.com")
    assert len(upstream2.received) == 1
